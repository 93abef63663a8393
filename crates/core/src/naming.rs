//! Server-generated names (`amq.gen-…` queues, `amq.ctag-…` consumer tags).

/// `prefix` followed by 22 URL-safe base64 characters of a random v4 UUID,
/// the shape RabbitMQ gives its generated names.
pub fn unique_name(prefix: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = uuid::Uuid::new_v4().as_u128();
    let mut s = String::with_capacity(prefix.len() + 22);
    s.push_str(prefix);
    for i in 0..22 {
        s.push(ALPHABET[((n >> (i * 6)) & 63) as usize] as char);
    }
    s
}
