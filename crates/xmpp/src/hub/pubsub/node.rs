//! One publish-subscribe node (XEP-0060): its configuration, items in
//! publish order, affiliations and subscriptions. Pure data and rules, no
//! addressing and no stanzas: the service glue decides who may call what.

use std::collections::{BTreeMap, VecDeque};

use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use tributary_xmpp_xml::Element;

/// The largest `pubsub#max_items` a node may have; `max` means this.
pub(crate) const MAX_ITEMS_CAP: u32 = 1000;

/// Who may subscribe and retrieve items (XEP-0060 §4.5).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessModel {
    /// Anyone.
    Open,
    /// Contacts subscribed to the owner's presence.
    Presence,
    /// Contacts in the owner's roster (in one of the allowed groups, if any).
    Roster,
    /// Only entities with an affiliation (member and above).
    Whitelist,
}

impl AccessModel {
    /// The form value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }

    /// Parses a form value; `authorize` is not supported.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// Who may publish (XEP-0060 `pubsub#publish_model`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PublishModel {
    /// Owners and publishers.
    Publishers,
    /// Subscribers too.
    Subscribers,
    /// Anyone.
    Open,
}

impl PublishModel {
    /// The form value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }

    /// Parses a form value.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "publishers" => PublishModel::Publishers,
            "subscribers" => PublishModel::Subscribers,
            "open" => PublishModel::Open,
            _ => return None,
        })
    }
}

/// When the last published item is sent (`pubsub#send_last_published_item`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SendLast {
    /// Never.
    Never,
    /// When an entity subscribes.
    OnSub,
    /// On subscription and when a contact's resource comes online (PEP).
    OnSubAndPresence,
}

impl SendLast {
    /// The form value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    /// Parses a form value.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// A node's configuration (`pubsub#node_config`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeConfig {
    /// `pubsub#access_model`.
    pub(crate) access_model: AccessModel,
    /// `pubsub#publish_model`.
    pub(crate) publish_model: PublishModel,
    /// `pubsub#max_items`, at most [`MAX_ITEMS_CAP`].
    pub(crate) max_items: u32,
    /// `pubsub#persist_items`: items are written to the store.
    pub(crate) persist_items: bool,
    /// `pubsub#notify_retract`.
    pub(crate) notify_retract: bool,
    /// `pubsub#notify_delete`.
    pub(crate) notify_delete: bool,
    /// `pubsub#deliver_payloads`.
    pub(crate) deliver_payloads: bool,
    /// `pubsub#send_last_published_item`.
    pub(crate) send_last: SendLast,
    /// `pubsub#title`.
    #[serde(default)]
    pub(crate) title: String,
    /// `pubsub#roster_groups_allowed` (access model `roster`).
    #[serde(default)]
    pub(crate) roster_groups: Vec<String>,
}

impl NodeConfig {
    /// The defaults of a node on the `pubsub.<domain>` service: open,
    /// publishers, 10 items, persistent.
    pub(crate) fn service_default() -> Self {
        NodeConfig {
            access_model: AccessModel::Open,
            publish_model: PublishModel::Publishers,
            max_items: 10,
            persist_items: true,
            notify_retract: true,
            notify_delete: true,
            deliver_payloads: true,
            send_last: SendLast::OnSub,
            title: String::new(),
            roster_groups: Vec::new(),
        }
    }

    /// The defaults of a PEP node (XEP-0163 §4): presence access, one item,
    /// last item on subscription and presence.
    pub(crate) fn pep_default() -> Self {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: 1,
            send_last: SendLast::OnSubAndPresence,
            ..Self::service_default()
        }
    }
}

/// An entity's affiliation with a node (XEP-0060 §4.1).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Affiliation {
    /// Banned.
    Outcast,
    /// No affiliation.
    None,
    /// May subscribe and retrieve under the whitelist model.
    Member,
    /// May publish.
    Publisher,
    /// Full control.
    Owner,
}

impl Affiliation {
    /// The protocol value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Publisher => "publisher",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses a protocol value (`publish-only` is not supported).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "publisher" => Affiliation::Publisher,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// One published item.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Item {
    /// The item id (XEP-0060 §7.1.1), unique in the node.
    pub(crate) id: String,
    /// The payload, if any.
    pub(crate) payload: Option<Element>,
    /// The publisher's bare JID.
    pub(crate) publisher: String,
    /// Global publish order, for the store.
    pub(crate) seq: u64,
}

/// A subscription (XEP-0060 §6.1); only `subscribed` exists here (no
/// authorize access model, so nothing is ever pending).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The subscribed JID (bare or full).
    pub(crate) jid: String,
    /// The subscription id.
    pub(crate) subid: String,
}

/// Why an unsubscribe was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnsubscribeError {
    /// The JID is not subscribed (XEP-0060 §6.2.3.2).
    NotSubscribed,
    /// Several subscriptions and no subid (§6.2.3.3).
    SubidRequired,
    /// The subid does not match (§6.2.3.5).
    InvalidSubid,
}

/// One node: configuration, items oldest first, affiliations, subscriptions.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Configuration.
    pub(crate) config: NodeConfig,
    /// Items, oldest first; at most `config.max_items`.
    pub(crate) items: VecDeque<Item>,
    /// Affiliations other than `none`.
    pub(crate) affiliations: BTreeMap<BareJid, Affiliation>,
    /// Subscriptions, in subscription order.
    pub(crate) subscriptions: Vec<Subscription>,
}

impl Node {
    /// A new node owned by `owner`.
    pub(crate) fn new(owner: BareJid, config: NodeConfig) -> Self {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(owner, Affiliation::Owner);
        Node {
            config,
            items: VecDeque::new(),
            affiliations,
            subscriptions: Vec::new(),
        }
    }

    /// The affiliation of `jid`'s bare JID.
    pub(crate) fn affiliation(&self, jid: &BareJid) -> Affiliation {
        self.affiliations
            .get(jid)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Sets (or, with `none`, removes) an affiliation.
    pub(crate) fn set_affiliation(&mut self, jid: BareJid, aff: Affiliation) {
        if aff == Affiliation::None {
            self.affiliations.remove(&jid);
        } else {
            self.affiliations.insert(jid, aff);
        }
    }

    /// The owners' bare JIDs.
    pub(crate) fn owners(&self) -> Vec<BareJid> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
            .map(|(j, _)| j.clone())
            .collect()
    }

    /// Whether any subscription's JID has `bare` as its bare JID.
    pub(crate) fn is_subscribed_bare(&self, bare: &BareJid) -> bool {
        self.subscriptions
            .iter()
            .any(|s| Jid::new(&s.jid).is_ok_and(|j| j.to_bare() == *bare))
    }

    /// Publishes (or replaces, moving it to the end) the item `item.id`.
    /// Returns the items that fell out because of `max_items`.
    pub(crate) fn publish(&mut self, item: Item) -> Vec<Item> {
        self.items.retain(|i| i.id != item.id);
        self.items.push_back(item);
        self.trim()
    }

    /// Drops the oldest items beyond `max_items`; returns them.
    pub(crate) fn trim(&mut self) -> Vec<Item> {
        let max = self.config.max_items.max(1) as usize;
        let mut dropped = Vec::new();
        while self.items.len() > max {
            if let Some(old) = self.items.pop_front() {
                dropped.push(old);
            }
        }
        dropped
    }

    /// Removes the item `id`.
    pub(crate) fn retract(&mut self, id: &str) -> Option<Item> {
        let pos = self.items.iter().position(|i| i.id == id)?;
        self.items.remove(pos)
    }

    /// Removes every item; returns them.
    pub(crate) fn purge(&mut self) -> Vec<Item> {
        self.items.drain(..).collect()
    }

    /// The newest item.
    pub(crate) fn last(&self) -> Option<&Item> {
        self.items.back()
    }

    /// Items for a retrieval: the ones named (in the order named, unknown
    /// ids skipped), or the newest `max` (oldest first), or all.
    pub(crate) fn select(&self, ids: &[String], max: Option<usize>) -> Vec<&Item> {
        if !ids.is_empty() {
            return ids
                .iter()
                .filter_map(|id| self.items.iter().find(|i| &i.id == id))
                .collect();
        }
        let skip = max.map_or(0, |m| self.items.len().saturating_sub(m));
        self.items.iter().skip(skip).collect()
    }

    /// Subscribes `jid`; an existing subscription of the same JID is
    /// returned unchanged (no second subid). `subid` is used for a new one.
    pub(crate) fn subscribe(&mut self, jid: &str, subid: String) -> (Subscription, bool) {
        if let Some(s) = self.subscriptions.iter().find(|s| s.jid == jid) {
            return (s.clone(), false);
        }
        let s = Subscription {
            jid: jid.to_string(),
            subid,
        };
        self.subscriptions.push(s.clone());
        (s, true)
    }

    /// Removes `jid`'s subscription (the one with `subid` if given).
    pub(crate) fn unsubscribe(
        &mut self,
        jid: &str,
        subid: Option<&str>,
    ) -> Result<Subscription, UnsubscribeError> {
        let mine: Vec<usize> = self
            .subscriptions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.jid == jid)
            .map(|(i, _)| i)
            .collect();
        let pos = match (mine.as_slice(), subid) {
            ([], _) => return Err(UnsubscribeError::NotSubscribed),
            (_, Some(subid)) => *mine
                .iter()
                .find(|&&i| self.subscriptions[i].subid == subid)
                .ok_or(UnsubscribeError::InvalidSubid)?,
            ([one], None) => *one,
            (_, None) => return Err(UnsubscribeError::SubidRequired),
        };
        Ok(self.subscriptions.remove(pos))
    }

    /// Applies a new configuration; returns the items dropped by a lower
    /// `max_items`.
    pub(crate) fn configure(&mut self, config: NodeConfig) -> Vec<Item> {
        self.config = config;
        self.trim()
    }
}
