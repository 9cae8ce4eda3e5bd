//! `stackctl dependencies NAME [--reverse]`: the dependency tree as
//! `systemctl list-dependencies` draws it.

use super::{dot, exit, print_json, Result};
use crate::dbus::client::Client;
use crate::dbus::types::DependencyRow;
use crate::health::Health;
use crate::state::ActiveState;

/// `dependencies NAME`: the tree as `systemctl list-dependencies` draws it.
pub(super) async fn dependencies(
    client: &Client,
    name: &str,
    reverse: bool,
    json: bool,
) -> Result<u8> {
    let rows = client.dependencies(name, reverse).await?;
    if json {
        return print_json(&rows);
    }
    // "remote" and "unknown" (another host's, not configured) read as
    // states of no colour.
    let state = |r: &DependencyRow| {
        dot(
            &ActiveState::from(r.active_state.as_str()),
            Health::read(&r.health),
        )
    };
    for line in tree_lines(&rows, state) {
        println!("{line}");
    }
    Ok(exit::OK)
}

/// Pre-order rows with depths, drawn with ├─ └─ │ and a dot per node
/// below the root.
fn tree_lines(rows: &[DependencyRow], dot: impl Fn(&DependencyRow) -> &'static str) -> Vec<String> {
    // Whether a later row sits at `depth` before the tree climbs above it:
    // the node has a sibling after it.
    let has_next_sibling = |i: usize, depth: u32| {
        rows[i + 1..]
            .iter()
            .take_while(|r| r.depth >= depth)
            .any(|r| r.depth == depth)
    };
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.depth == 0 {
            out.push(r.name.clone());
            continue;
        }
        let mut prefix = String::new();
        for d in 1..r.depth {
            // An ancestor at depth d with a later sibling keeps its bar.
            let ancestor = rows[..i].iter().rposition(|a| a.depth == d).unwrap_or(0);
            prefix.push_str(if has_next_sibling(ancestor, d) {
                "│ "
            } else {
                "  "
            });
        }
        prefix.push_str(if has_next_sibling(i, r.depth) {
            "├─"
        } else {
            "└─"
        });
        let state = match r.active_state.as_str() {
            "remote" => " (on another host)".to_string(),
            "unknown" => " (not configured)".to_string(),
            _ => String::new(),
        };
        out.push(format!("{} {prefix}{}{state}", dot(r), r.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_drawn_as_systemctl_does() {
        let rows: Vec<DependencyRow> = [
            (0, "web"),
            (1, "app"),
            (2, "db"),
            (3, "disk"),
            (2, "cache"),
            (1, "proxy"),
            (2, "certs"),
        ]
        .into_iter()
        .map(|(depth, name)| DependencyRow {
            depth,
            name: name.into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            health: "healthy".into(),
        })
        .collect();
        assert_eq!(
            tree_lines(&rows, |_| "●"),
            vec![
                "web",
                "● ├─app",
                "● │ ├─db",
                "● │ │ └─disk",
                "● │ └─cache",
                "● └─proxy",
                "●   └─certs",
            ]
        );
    }
}
