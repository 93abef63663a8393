//! Read-only summaries of the hub's rooms and publish-subscribe nodes, for
//! the management API (`/api/xmpp/rooms`, `/api/xmpp/pubsub`). Plain data:
//! no JID types, no hub internals.

use super::Hub;

/// One Multi-User Chat room (XEP-0045).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// `room@service`.
    pub jid: String,
    /// The natural-language name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The subject, if one was set.
    pub subject: Option<String>,
    /// Kept when empty and across restarts.
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    /// Only members may enter.
    pub members_only: bool,
    /// Protected by a password.
    pub password_protected: bool,
    /// Visitors may not speak.
    pub moderated: bool,
    /// Created and not yet configured.
    pub locked: bool,
    /// Occupants' nicknames and roles, in join order.
    pub occupants: Vec<(String, &'static str)>,
    /// Affiliations other than `none`: (bare JID, affiliation).
    pub affiliations: Vec<(String, &'static str)>,
    /// Messages kept for the history sent on join.
    pub history: usize,
}

/// One publish-subscribe node (XEP-0060), of the component or of a PEP
/// service (a user's bare JID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    /// The service JID (`pubsub.<domain>` or `user@domain` for PEP).
    pub service: String,
    /// The node name.
    pub node: String,
    /// Its title, if configured.
    pub title: String,
    /// The access model (`open`, `presence`, `roster`, `whitelist`).
    pub access_model: &'static str,
    /// Items kept at most.
    pub max_items: u32,
    /// Items are persisted.
    pub persist_items: bool,
    /// Items held now.
    pub items: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Owners' bare JIDs.
    pub owners: Vec<String>,
}

impl Hub {
    /// Every MUC room, by JID.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        self.muc
            .rooms
            .values()
            .map(|r| RoomSummary {
                jid: r.jid.to_string(),
                name: r.config.name.clone(),
                description: r.config.desc.clone(),
                subject: r.subject.as_ref().map(|s| s.text.clone()),
                persistent: r.config.persistent,
                public: r.config.public,
                members_only: r.config.members_only,
                password_protected: r.config.password.is_some(),
                moderated: r.config.moderated,
                locked: r.locked,
                occupants: r
                    .occupants
                    .iter()
                    .map(|o| (o.nick.clone(), o.role.as_str()))
                    .collect(),
                affiliations: r
                    .affiliations
                    .iter()
                    .map(|(j, a)| (j.to_string(), a.as_str()))
                    .collect(),
                history: r.history.len(),
            })
            .collect()
    }

    /// Every publish-subscribe node, by service then node name.
    pub fn pubsub_nodes(&self) -> Vec<NodeSummary> {
        let mut out: Vec<NodeSummary> = self
            .pubsub
            .services
            .iter()
            .flat_map(|(service, nodes)| {
                nodes.iter().map(move |(name, n)| NodeSummary {
                    service: service.clone(),
                    node: name.clone(),
                    title: n.config.title.clone(),
                    access_model: n.config.access_model.as_str(),
                    max_items: n.config.max_items,
                    persist_items: n.config.persist_items,
                    items: n.items.len(),
                    subscriptions: n.subscriptions.len(),
                    owners: n.owners().iter().map(ToString::to_string).collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
        out
    }
}
