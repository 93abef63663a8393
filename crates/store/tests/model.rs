//! Random publish/ack/deliver/delete-queue/reopen sequences against an in-memory model.
//! Tiny segments so that rotation, dead-segment deletion and compaction all run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use tributary_store::{Location, Recovery, Store, StoreOptions};

#[derive(Clone, Debug)]
enum Op {
    Publish { queues: Vec<u64>, size: usize },
    Ack { queue: u64, pick: usize },
    Deliver { queue: u64, pick: usize },
    DeleteQueue(u64),
    Read { pick: usize },
    Sync,
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (proptest::collection::vec(1u64..=3, 0..3), 0usize..300)
            .prop_map(|(queues, size)| Op::Publish { queues, size }),
        4 => (1u64..=3, any::<usize>()).prop_map(|(queue, pick)| Op::Ack { queue, pick }),
        2 => (1u64..=3, any::<usize>()).prop_map(|(queue, pick)| Op::Deliver { queue, pick }),
        1 => (1u64..=3).prop_map(Op::DeleteQueue),
        2 => any::<usize>().prop_map(|pick| Op::Read { pick }),
        1 => Just(Op::Sync),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

fn payload(id: u64, size: usize) -> Vec<u8> {
    (0..size).map(|i| (id as usize * 7 + i) as u8).collect()
}

#[derive(Default)]
struct Model {
    /// queue -> [(msg_id, delivered)] in publish order
    queues: BTreeMap<u64, Vec<(u64, bool)>>,
    payloads: HashMap<u64, Vec<u8>>,
    locations: HashMap<u64, Location>,
}

impl Model {
    fn live(&self) -> usize {
        let mut ids: Vec<u64> = self.queues.values().flatten().map(|x| x.0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    fn check(&mut self, rec: &Recovery) -> Result<(), TestCaseError> {
        self.queues.retain(|_, v| !v.is_empty());
        let got_queues: Vec<u64> = {
            let mut v: Vec<u64> = rec
                .queues
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(q, _)| *q)
                .collect();
            v.sort_unstable();
            v
        };
        prop_assert_eq!(got_queues, self.queues.keys().copied().collect::<Vec<_>>());
        for (q, want) in &self.queues {
            let got = &rec.queues[q];
            let got_ids: Vec<u64> = got.iter().map(|m| m.msg_id).collect();
            let want_ids: Vec<u64> = want.iter().map(|m| m.0).collect();
            prop_assert_eq!(got_ids, want_ids, "queue {}", q);
            for (m, (_, delivered)) in got.iter().zip(want) {
                prop_assert_eq!(m.payload.as_ref(), self.payloads[&m.msg_id].as_slice());
                prop_assert_eq!(m.delivered, *delivered || !rec.clean_shutdown);
                self.locations.insert(m.msg_id, m.location);
            }
        }
        Ok(())
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        segment_size: 700,
        sync: false,
        load_payloads: true,
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, rec) = Store::open(dir.path(), opts()).unwrap();
    prop_assert!(rec.queues.is_empty());
    let mut model = Model::default();
    let mut last_id = 0;
    for op in ops {
        match op {
            Op::Publish { queues, size } => {
                let id = store.next_msg_id();
                prop_assert!(id > last_id);
                last_id = id;
                let body = payload(id, size);
                let loc = store.append_publish(id, &queues, &body);
                let mut seen = Vec::new();
                for q in queues {
                    if !seen.contains(&q) {
                        seen.push(q);
                        model.queues.entry(q).or_default().push((id, false));
                    }
                }
                model.payloads.insert(id, body);
                model.locations.insert(id, loc);
            }
            Op::Ack { queue, pick } => {
                if let Some(v) = model.queues.get_mut(&queue).filter(|v| !v.is_empty()) {
                    let (id, _) = v.remove(pick % v.len());
                    store.append_ack(queue, id);
                }
            }
            Op::Deliver { queue, pick } => {
                if let Some(v) = model.queues.get_mut(&queue).filter(|v| !v.is_empty()) {
                    let n = v.len();
                    let m = &mut v[pick % n];
                    m.1 = true;
                    store.append_delivered(queue, m.0);
                }
            }
            Op::DeleteQueue(q) => {
                model.queues.remove(&q);
                store.append_queue_deleted(q);
            }
            Op::Read { pick } => {
                let mut ids: Vec<u64> = model.queues.values().flatten().map(|x| x.0).collect();
                ids.sort_unstable();
                ids.dedup();
                if !ids.is_empty() {
                    let id = ids[pick % ids.len()];
                    let got = store.read(model.locations[&id]).unwrap();
                    prop_assert_eq!(got.as_ref(), model.payloads[&id].as_slice());
                }
            }
            Op::Sync => {
                store.sync().unwrap();
                prop_assert_eq!(store.stats().live_messages as usize, model.live());
            }
            Op::Reopen { clean } => {
                if clean {
                    store.close().unwrap();
                }
                drop(Arc::try_unwrap(store).ok());
                let (s, rec) = Store::open(dir.path(), opts()).unwrap();
                prop_assert_eq!(rec.clean_shutdown, clean);
                prop_assert!(rec.report.corrupt.is_empty() && rec.report.truncated.is_empty());
                model.check(&rec)?;
                store = s;
            }
        }
    }
    store.close().unwrap();
    drop(Arc::try_unwrap(store).ok());
    let (_s, rec) = Store::open(dir.path(), opts()).unwrap();
    model.check(&rec)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
