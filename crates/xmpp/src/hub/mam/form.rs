//! Just enough of data forms (XEP-0004) for the MUC configuration, room
//! info and MAM query forms.

use std::collections::BTreeMap;

use tributary_xmpp_xml::Element;

use crate::ns;

/// A form field to render.
pub(in crate::hub) struct Field {
    var: String,
    kind: &'static str,
    label: Option<String>,
    value: Option<String>,
    options: Vec<String>,
}

impl Field {
    /// A field with a label and one value.
    pub(in crate::hub) fn new(var: &str, kind: &'static str, label: &str, value: &str) -> Self {
        Field {
            var: var.to_string(),
            kind,
            label: Some(label.to_string()),
            value: Some(value.to_string()),
            options: Vec::new(),
        }
    }

    /// A hidden field (`FORM_TYPE`).
    pub(in crate::hub) fn hidden(var: &str, value: &str) -> Self {
        Field {
            var: var.to_string(),
            kind: "hidden",
            label: None,
            value: Some(value.to_string()),
            options: Vec::new(),
        }
    }

    /// A field without a value (an empty query form).
    pub(in crate::hub) fn blank(var: &str, kind: &'static str) -> Self {
        Field {
            var: var.to_string(),
            kind,
            label: None,
            value: None,
            options: Vec::new(),
        }
    }

    /// Adds the options of a list field.
    pub(in crate::hub) fn with_options(mut self, options: &[&str]) -> Self {
        self.options = options.iter().map(|o| o.to_string()).collect();
        self
    }

    /// The `<field/>` element.
    pub(in crate::hub) fn to_element(&self) -> Element {
        let mut f = Element::new("field", ns::DATA_FORMS)
            .with_attr("var", self.var.clone())
            .with_attr("type", self.kind);
        if let Some(label) = &self.label {
            f.set_attr("label", label.clone());
        }
        for o in &self.options {
            f.push_child(
                Element::new("option", ns::DATA_FORMS)
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(o.clone())),
            );
        }
        if let Some(value) = &self.value {
            f.push_child(Element::new("value", ns::DATA_FORMS).with_text(value.clone()));
        }
        f
    }
}

/// The values of a submitted form by field name.
pub(in crate::hub) fn values(x: &Element) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    for f in x.elements().filter(|e| e.is("field", ns::DATA_FORMS)) {
        let Some(var) = f.attr("var") else {
            continue;
        };
        let vals = f
            .elements()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(|v| v.text())
            .collect();
        map.insert(var.to_string(), vals);
    }
    map
}
