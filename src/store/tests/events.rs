//! The event log's sequence and the notification outbox.

use super::*;

#[test]
fn event_seq_is_monotonic_and_survives_reopen_and_pruning() {
    let dir = temp();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_event_seq().unwrap(), 0);
        assert!(store.events_after(0, 10).unwrap().is_empty());
        let mut last = 0;
        for n in 0..5 {
            let seq = store.append_event(&event("state", n)).unwrap();
            assert!(seq > last);
            last = seq;
        }
        assert_eq!(store.last_event_seq().unwrap(), last);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_event_seq().unwrap(), 5);
    let all = store.events_after(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all[2].data, json!({ "n": 2 }));
    assert_eq!(all[2].summary, "event 2");
    assert_eq!(all[2].service.as_deref(), Some("web"));
    assert_eq!(all[2].severity, "info");
    let page = store.events_after(2, 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);

    let no_service = NewEvent {
        service: None,
        ..event("peer-lost", 9)
    };
    assert_eq!(store.append_event(&no_service).unwrap(), 6);
    assert_eq!(store.events_after(5, 10).unwrap()[0].service, None);

    assert_eq!(store.prune_events(2).unwrap(), 4);
    let left = store.events_after(0, 100).unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(store.prune_events(0).unwrap(), 2);
    assert_eq!(store.last_event_seq().unwrap(), 6);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_event_seq().unwrap(), 6);
    assert_eq!(store.append_event(&event("state", 7)).unwrap(), 7);
}

#[test]
fn outbox_due_retry_delivered() {
    let store = Store::open_in_memory().unwrap();
    let payload = json!({ "summary": "web is unhealthy" });
    let a = store.outbox_push("email", "event-1", &payload).unwrap();
    let b = store
        .outbox_push("webhook.ops", "event-1", &payload)
        .unwrap();
    assert_ne!(a, b);
    // Same channel and key: the same item, nothing new.
    assert_eq!(
        store
            .outbox_push("email", "event-1", &json!("other"))
            .unwrap(),
        a
    );

    let now = now_usec();
    let due = store.outbox_due(now, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(due[0].payload, payload);
    assert_eq!(due[0].channel, "email");
    assert_eq!(due[0].dedup_key, "event-1");
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[0].last_error, None);
    assert_eq!(store.outbox_due(now, 1).unwrap().len(), 1);

    store
        .outbox_retry(a, now + 5_000_000, "connection refused")
        .unwrap();
    let due = store.outbox_due(now, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [b]);
    let later = store.outbox_due(now + 5_000_000, 10).unwrap();
    assert_eq!(later.iter().map(|i| i.id).collect::<Vec<_>>(), [b, a]);
    assert_eq!(later[1].attempts, 1);
    assert_eq!(later[1].last_error.as_deref(), Some("connection refused"));
    store.outbox_retry(a, now + 6_000_000, "timeout").unwrap();
    let again = store.outbox_due(now + 6_000_000, 10).unwrap();
    assert_eq!(again[1].attempts, 2);

    store.outbox_delivered(b).unwrap();
    store.outbox_delivered(b).unwrap();
    store.outbox_delivered(a).unwrap();
    assert!(store.outbox_due(u64::MAX, 10).unwrap().is_empty());
    // Delivered items still dedup.
    assert_eq!(store.outbox_push("email", "event-1", &payload).unwrap(), a);
    assert!(store.outbox_due(u64::MAX, 10).unwrap().is_empty());

    assert!(matches!(
        store.outbox_delivered(999),
        Err(StoreError::NoSuchOutboxItem(999))
    ));
    assert!(matches!(
        store.outbox_retry(999, 0, "x"),
        Err(StoreError::NoSuchOutboxItem(999))
    ));

    let c = store.outbox_push("email", "event-2", &payload).unwrap();
    assert!(c > b);
    assert_eq!(store.outbox_prune(1).unwrap(), 1); // a goes, b stays, c undelivered
    assert_eq!(store.outbox_due(u64::MAX, 10).unwrap()[0].id, c);
    assert_ne!(store.outbox_push("email", "event-1", &payload).unwrap(), a);
}

#[test]
fn held_outbox_items_wait_for_one_summary_that_survives_a_reopen() {
    let dir = temp();
    let store = Store::open(dir.path()).unwrap();
    let h1 = store.outbox_hold("email", "alert-1", &json!(1)).unwrap();
    let h2 = store.outbox_hold("email", "alert-2", &json!(2)).unwrap();
    let other = store.outbox_hold("journal", "alert-1", &json!(1)).unwrap();
    // Held items are never due, and a held key is pushed at most once.
    assert!(store.outbox_due(u64::MAX, 10).unwrap().is_empty());
    assert_eq!(
        store.outbox_hold("email", "alert-1", &json!(9)).unwrap(),
        h1
    );
    drop(store);

    // A restart finds them.
    let store = Store::open(dir.path()).unwrap();
    let all = store.outbox_held(None, 10).unwrap();
    assert_eq!(
        all.iter().map(|i| i.id).collect::<Vec<_>>(),
        [h1, h2, other]
    );
    let email = store.outbox_held(Some("email"), 10).unwrap();
    assert_eq!(email.len(), 2);
    assert_eq!(email[1].payload, json!(2));

    let s = store
        .outbox_summarise("email", "summary:1-2", &json!("both"), &[h1, h2])
        .unwrap();
    // The summary is due; the held items are done, the other channel's not.
    let due = store.outbox_due(u64::MAX, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [s]);
    assert_eq!(due[0].payload, json!("both"));
    assert!(store.outbox_held(Some("email"), 10).unwrap().is_empty());
    assert_eq!(store.outbox_held(None, 10).unwrap()[0].id, other);
    // Summarising again (a retry after a lost answer) changes nothing.
    assert_eq!(
        store
            .outbox_summarise("email", "summary:1-2", &json!("both"), &[h1, h2])
            .unwrap(),
        s
    );
    assert_eq!(store.outbox_due(u64::MAX, 10).unwrap().len(), 1);
}
