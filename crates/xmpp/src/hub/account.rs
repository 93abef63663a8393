//! Deleting an account's IM state.

use super::persist::{BLOCKLIST_TABLE, OFFLINE_TABLE, ROSTER_TABLE, VCARD_TABLE, offline_key};
use super::roster::Item;
use super::{Hub, Output};

impl Hub {
    pub(super) fn forget_account(&mut self, username: &str, out: &mut Vec<Output>) {
        let Some(bare) = self.local_bare(username) else {
            return;
        };
        // Cancel both directions with every contact first (Prosody's
        // user-deleted handling), so their rosters stay consistent.
        if let Some(roster) = self.rosters.get(&bare).cloned() {
            for (contact, item) in &roster.items {
                let pending = roster.pending.contains_key(contact);
                self.cancel_subscriptions(&bare, contact, item, pending, out);
            }
            for contact in roster.pending.keys() {
                if !roster.items.contains_key(contact) {
                    self.cancel_subscriptions(&bare, contact, &Item::default(), true, out);
                }
            }
        }
        if self.rosters.remove(&bare).is_some() {
            out.push(Output::Delete {
                table: ROSTER_TABLE,
                key: bare.to_string(),
            });
        }
        if let Some(messages) = self.offline.remove(&bare) {
            for seq in messages.keys() {
                out.push(Output::Delete {
                    table: OFFLINE_TABLE,
                    key: offline_key(&bare, *seq),
                });
            }
        }
        if self.vcards.remove(&bare).is_some() {
            out.push(Output::Delete {
                table: VCARD_TABLE,
                key: bare.to_string(),
            });
        }
        if self.blocklists.remove(&bare).is_some() {
            out.push(Output::Delete {
                table: BLOCKLIST_TABLE,
                key: bare.to_string(),
            });
        }
        self.pubsub_forget_account(&bare, out);
        self.mam_forget(&bare, out);
    }
}
