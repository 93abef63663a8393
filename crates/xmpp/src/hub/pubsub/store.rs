//! The stored form of publish-subscribe state (nodes of `pubsub.<domain>`
//! and of every account's PEP service) and its restore.
//!
//! | table | key | value |
//! |---|---|---|
//! | `xmpp_pubsub_node` | `<service JID>\n<node>` | `{"config":{…},"aff":[["jid","owner"]],"subs":[{"jid","subid"}]}` |
//! | `xmpp_pubsub_item` | `<service JID>\n<node>\n<item id>` | `{"seq":N,"publisher":"jid","payload":tokens?}` |
//!
//! Items are written only for nodes with `pubsub#persist_items`; they come
//! back in publish order (`seq`). Node names and item ids never contain a
//! newline (refused at creation and publication).

use std::collections::BTreeMap;

use jid::BareJid;
use serde::{Deserialize, Serialize};

use super::super::persist::{Tok, from_tokens, to_tokens};
use super::super::{HubError, Output};
use super::node::{Affiliation, Item, Node, NodeConfig, Subscription};

/// Nodes: configuration, affiliations, subscriptions.
pub(crate) const NODE_TABLE: &str = "xmpp_pubsub_node";
/// Items of persistent nodes.
pub(crate) const ITEM_TABLE: &str = "xmpp_pubsub_item";

#[derive(Serialize, Deserialize)]
struct NodeRow {
    config: NodeConfig,
    aff: Vec<(String, Affiliation)>,
    #[serde(default)]
    subs: Vec<Subscription>,
}

#[derive(Serialize, Deserialize)]
struct ItemRow {
    seq: u64,
    publisher: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<Vec<Tok>>,
}

/// The key of a node row.
pub(crate) fn node_key(service: &str, node: &str) -> String {
    format!("{service}\n{node}")
}

/// The key of an item row.
pub(crate) fn item_key(service: &str, node: &str, id: &str) -> String {
    format!("{service}\n{node}\n{id}")
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs with string keys: serializing cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `Put` of a node row.
pub(crate) fn put_node(service: &str, name: &str, node: &Node, out: &mut Vec<Output>) {
    let row = NodeRow {
        config: node.config.clone(),
        aff: node
            .affiliations
            .iter()
            .map(|(j, a)| (j.to_string(), *a))
            .collect(),
        subs: node.subscriptions.clone(),
    };
    out.push(Output::Put {
        table: NODE_TABLE,
        key: node_key(service, name),
        value: json(&row),
    });
}

/// `Put` of an item row.
pub(crate) fn put_item(service: &str, name: &str, item: &Item, out: &mut Vec<Output>) {
    let row = ItemRow {
        seq: item.seq,
        publisher: item.publisher.clone(),
        payload: item.payload.as_ref().map(to_tokens),
    };
    out.push(Output::Put {
        table: ITEM_TABLE,
        key: item_key(service, name, &item.id),
        value: json(&row),
    });
}

/// `Delete` of an item row.
pub(crate) fn delete_item(service: &str, name: &str, id: &str, out: &mut Vec<Output>) {
    out.push(Output::Delete {
        table: ITEM_TABLE,
        key: item_key(service, name, id),
    });
}

/// `Delete` of a node row.
pub(crate) fn delete_node(service: &str, name: &str, out: &mut Vec<Output>) {
    out.push(Output::Delete {
        table: NODE_TABLE,
        key: node_key(service, name),
    });
}

/// Services by JID, each with its nodes by name.
pub(crate) type Services = std::collections::HashMap<String, BTreeMap<String, Node>>;

/// Restores one of the two tables into `services`; returns the highest
/// item sequence number seen. Nodes must be restored before their items;
/// items of unknown nodes are skipped.
pub(crate) fn restore(
    services: &mut Services,
    table: &str,
    rows: Vec<(String, Vec<u8>)>,
) -> Result<u64, HubError> {
    let corrupt = |key: &str, message: String| HubError::Corrupt {
        table: table.to_string(),
        key: key.to_string(),
        message,
    };
    let mut max_seq = 0;
    let mut items: Vec<(String, String, Item)> = Vec::new();
    for (key, value) in rows {
        if table == NODE_TABLE {
            let (service, name) = key
                .split_once('\n')
                .ok_or_else(|| corrupt(&key, "key without a node name".into()))?;
            let row: NodeRow =
                serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            let mut affiliations = BTreeMap::new();
            for (jid, aff) in row.aff {
                let jid = BareJid::new(&jid).map_err(|e| corrupt(&key, e.to_string()))?;
                affiliations.insert(jid, aff);
            }
            let node = Node {
                config: row.config,
                items: Default::default(),
                affiliations,
                subscriptions: row.subs,
            };
            services
                .entry(service.to_string())
                .or_default()
                .insert(name.to_string(), node);
        } else {
            let mut parts = key.splitn(3, '\n');
            let (Some(service), Some(name), Some(id)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt(&key, "key without node and item".into()));
            };
            let row: ItemRow =
                serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            let payload = match row.payload {
                Some(toks) => Some(from_tokens(toks).map_err(|m| corrupt(&key, m))?),
                None => None,
            };
            max_seq = max_seq.max(row.seq);
            items.push((
                service.to_string(),
                name.to_string(),
                Item {
                    id: id.to_string(),
                    payload,
                    publisher: row.publisher,
                    seq: row.seq,
                },
            ));
        }
    }
    items.sort_by_key(|(_, _, i)| i.seq);
    for (service, name, item) in items {
        if let Some(node) = services.get_mut(&service).and_then(|s| s.get_mut(&name)) {
            node.items.push_back(item);
        }
    }
    Ok(max_seq)
}
