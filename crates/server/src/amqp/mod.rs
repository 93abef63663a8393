//! AMQP 0-9-1 at the edge: the driver that connects sockets to the sans-IO
//! machine in `tributary-amqp`, and the session that maps it onto the core.

pub mod channel;
pub mod consumer;
pub mod driver;
pub mod props;
pub mod session;
pub mod stream_consumer;
