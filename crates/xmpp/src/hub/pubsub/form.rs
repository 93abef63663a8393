//! Data forms (XEP-0004) of publish-subscribe: the node configuration form
//! (`pubsub#node_config`, XEP-0060 §8.2) and publish options (§7.1.5).

use tributary_xmpp_xml::Element;

use super::node::{AccessModel, MAX_ITEMS_CAP, NodeConfig, PublishModel, SendLast};
use crate::ns;

/// FORM_TYPE of the node configuration form.
pub(crate) const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// FORM_TYPE of publish options.
pub(crate) const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// The fields of a submitted form, in order, FORM_TYPE left out.
pub(crate) type Fields = Vec<(String, Vec<String>)>;

/// Why a submitted form was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FormError {
    /// Not a `jabber:x:data` form of type submit, or of another FORM_TYPE.
    NotAForm,
    /// A field's value is not acceptable (field name).
    BadValue(String),
}

/// Reads `<x xmlns='jabber:x:data' type='submit'>`: FORM_TYPE must be
/// `form_type` (or absent); returns the other fields. A cancel form gives
/// no fields.
pub(crate) fn parse_submit(x: &Element, form_type: &str) -> Result<Fields, FormError> {
    if !x.is("x", ns::DATA_FORMS) {
        return Err(FormError::NotAForm);
    }
    match x.attr("type") {
        Some("submit") => {}
        Some("cancel") => return Ok(Vec::new()),
        _ => return Err(FormError::NotAForm),
    }
    let mut fields = Vec::new();
    for f in x.elements().filter(|e| e.is("field", ns::DATA_FORMS)) {
        let Some(var) = f.attr("var") else { continue };
        let values: Vec<String> = f
            .elements()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(|v| v.text())
            .collect();
        if var == "FORM_TYPE" {
            if values.first().is_some_and(|v| v != form_type) {
                return Err(FormError::NotAForm);
            }
            continue;
        }
        fields.push((var.to_string(), values));
    }
    Ok(fields)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `config` with the submitted fields applied. Fields this service does
/// not implement are ignored; known fields with bad values are refused.
pub(crate) fn apply(config: &NodeConfig, fields: &Fields) -> Result<NodeConfig, FormError> {
    let mut c = config.clone();
    for (var, values) in fields {
        let first = values.first().map(String::as_str).unwrap_or("");
        let bad = || FormError::BadValue(var.clone());
        let flag = || parse_bool(first).ok_or_else(bad);
        match var.as_str() {
            "pubsub#access_model" => c.access_model = AccessModel::parse(first).ok_or_else(bad)?,
            "pubsub#publish_model" => {
                c.publish_model = PublishModel::parse(first).ok_or_else(bad)?
            }
            "pubsub#max_items" => {
                c.max_items = if first == "max" {
                    MAX_ITEMS_CAP
                } else {
                    match first.parse::<u32>() {
                        Ok(n) if (1..=MAX_ITEMS_CAP).contains(&n) => n,
                        _ => return Err(bad()),
                    }
                }
            }
            "pubsub#persist_items" => c.persist_items = flag()?,
            "pubsub#notify_retract" => c.notify_retract = flag()?,
            "pubsub#notify_delete" => c.notify_delete = flag()?,
            "pubsub#deliver_payloads" => c.deliver_payloads = flag()?,
            "pubsub#send_last_published_item" => {
                c.send_last = SendLast::parse(first).ok_or_else(bad)?
            }
            "pubsub#title" => c.title = first.chars().take(1024).collect(),
            "pubsub#roster_groups_allowed" => c.roster_groups = values.clone(),
            _ => {}
        }
    }
    Ok(c)
}

fn field(var: &str, kind: &str, label: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", ns::DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", kind)
        .with_attr("label", label);
    for v in values {
        f.push_child(Element::new("value", ns::DATA_FORMS).with_text(*v));
    }
    f
}

fn list_single(var: &str, label: &str, value: &str, options: &[&str]) -> Element {
    let mut f = field(var, "list-single", label, &[value]);
    for o in options {
        f.push_child(
            Element::new("option", ns::DATA_FORMS)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(*o)),
        );
    }
    f
}

fn boolean(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// The configuration form (`type='form'`) showing `c`.
pub(crate) fn config_form(c: &NodeConfig) -> Element {
    let max = c.max_items.to_string();
    let groups: Vec<&str> = c.roster_groups.iter().map(String::as_str).collect();
    Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(field("FORM_TYPE", "hidden", "", &[NODE_CONFIG]))
        .with_child(field("pubsub#title", "text-single", "Title", &[&c.title]))
        .with_child(list_single(
            "pubsub#access_model",
            "Access model",
            c.access_model.as_str(),
            &["open", "presence", "roster", "whitelist"],
        ))
        .with_child(list_single(
            "pubsub#publish_model",
            "Publish model",
            c.publish_model.as_str(),
            &["publishers", "subscribers", "open"],
        ))
        .with_child(field(
            "pubsub#max_items",
            "text-single",
            "Max items",
            &[&max],
        ))
        .with_child(field(
            "pubsub#persist_items",
            "boolean",
            "Persist items",
            &[boolean(c.persist_items)],
        ))
        .with_child(field(
            "pubsub#deliver_payloads",
            "boolean",
            "Deliver payloads with notifications",
            &[boolean(c.deliver_payloads)],
        ))
        .with_child(field(
            "pubsub#notify_retract",
            "boolean",
            "Notify subscribers when items are retracted",
            &[boolean(c.notify_retract)],
        ))
        .with_child(field(
            "pubsub#notify_delete",
            "boolean",
            "Notify subscribers when the node is deleted",
            &[boolean(c.notify_delete)],
        ))
        .with_child(list_single(
            "pubsub#send_last_published_item",
            "When to send the last published item",
            c.send_last.as_str(),
            &["never", "on_sub", "on_sub_and_presence"],
        ))
        .with_child(field(
            "pubsub#roster_groups_allowed",
            "list-multi",
            "Roster groups allowed to subscribe",
            &groups,
        ))
}

/// Whether `config` already satisfies the publish options (XEP-0060
/// §7.1.5): each option, applied, leaves the configuration unchanged.
pub(crate) fn preconditions_met(config: &NodeConfig, options: &Fields) -> bool {
    matches!(apply(config, options), Ok(c) if c == *config)
}
