//! The stored form of persistent rooms and their restore.

use jid::BareJid;
use serde::{Deserialize, Serialize};

use super::room::{Affiliation, Config, DEFAULT_HISTORY, MAX_HISTORY, Room, Subject};
use crate::hub::{Hub, HubError, Output};

/// Persistent rooms, one row per room keyed by its bare JID.
pub(in crate::hub) const ROOM_TABLE: &str = "xmpp_muc_room";

#[derive(Serialize, Deserialize)]
struct RoomRow {
    config: ConfigRow,
    #[serde(default)]
    affiliations: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<SubjectRow>,
}

#[derive(Serialize, Deserialize)]
struct SubjectRow {
    nick: String,
    text: String,
}

#[derive(Serialize, Deserialize)]
#[serde(default)]
struct ConfigRow {
    name: String,
    desc: String,
    public: bool,
    members_only: bool,
    password: Option<String>,
    moderated: bool,
    whois_anyone: bool,
    max_users: usize,
    change_subject: bool,
    history_length: usize,
    allow_invites: bool,
}

impl Default for ConfigRow {
    fn default() -> Self {
        ConfigRow::from(&Config::default())
    }
}

impl From<&Config> for ConfigRow {
    fn from(c: &Config) -> Self {
        ConfigRow {
            name: c.name.clone(),
            desc: c.desc.clone(),
            public: c.public,
            members_only: c.members_only,
            password: c.password.clone(),
            moderated: c.moderated,
            whois_anyone: c.whois_anyone,
            max_users: c.max_users,
            change_subject: c.change_subject,
            history_length: c.history_length,
            allow_invites: c.allow_invites,
        }
    }
}

fn encode(r: &Room) -> Vec<u8> {
    let row = RoomRow {
        config: ConfigRow::from(&r.config),
        affiliations: r
            .affiliations
            .iter()
            .map(|(j, a)| (j.to_string(), a.as_str().to_string()))
            .collect(),
        subject: r.subject.as_ref().map(|s| SubjectRow {
            nick: s.nick.clone(),
            text: s.text.clone(),
        }),
    };
    // Plain strings, numbers and booleans: serializing cannot fail.
    serde_json::to_vec(&row).unwrap_or_default()
}

fn decode(jid: BareJid, bytes: &[u8]) -> Result<Room, String> {
    let row: RoomRow = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut room = Room::new(jid);
    let c = row.config;
    room.config = Config {
        name: c.name,
        desc: c.desc,
        persistent: true,
        public: c.public,
        members_only: c.members_only,
        password: c.password,
        moderated: c.moderated,
        whois_anyone: c.whois_anyone,
        max_users: c.max_users,
        change_subject: c.change_subject,
        history_length: if c.history_length > MAX_HISTORY {
            DEFAULT_HISTORY
        } else {
            c.history_length
        },
        allow_invites: c.allow_invites,
    };
    for (j, a) in row.affiliations {
        let jid = BareJid::new(&j).map_err(|e| format!("affiliation {j}: {e}"))?;
        let aff = Affiliation::parse(&a).ok_or_else(|| format!("affiliation {a}?"))?;
        room.set_affiliation(jid, aff);
    }
    room.subject = row.subject.map(|s| Subject {
        nick: s.nick,
        text: s.text,
    });
    Ok(room)
}

impl Hub {
    /// Writes the room's row when it is persistent (and configured).
    pub(super) fn save_room(&self, room: &BareJid, out: &mut Vec<Output>) {
        if let Some(r) = self.muc.rooms.get(room)
            && r.config.persistent
            && !r.locked
        {
            out.push(Output::Put {
                table: ROOM_TABLE,
                key: room.to_string(),
                value: encode(r),
            });
        }
    }

    /// Deletes the room's row.
    pub(super) fn unsave_room(&self, room: &BareJid, out: &mut Vec<Output>) {
        out.push(Output::Delete {
            table: ROOM_TABLE,
            key: room.to_string(),
        });
    }

    /// Restores the persistent rooms (before the archives, which refill
    /// their history).
    pub(in crate::hub) fn restore_rooms(
        &mut self,
        rows: Vec<(String, Vec<u8>)>,
    ) -> Result<(), HubError> {
        for (key, value) in rows {
            let corrupt = |message: String| HubError::Corrupt {
                table: ROOM_TABLE.to_string(),
                key: key.clone(),
                message,
            };
            let jid = BareJid::new(&key).map_err(|e| corrupt(e.to_string()))?;
            let room = decode(jid.clone(), &value).map_err(corrupt)?;
            self.muc.rooms.insert(jid, room);
        }
        Ok(())
    }
}
