//! `stackctl is-active`, `is-failed`, `is-wanted`: systemctl's answers.

use super::args::Args;
use super::remote::Conn;
use super::{exit, Failed, Result};

use crate::state::ActiveState;

/// Which question an is-* verb asks.
#[derive(Clone, Copy)]
pub(super) enum Is {
    Active,
    Failed,
    Wanted,
}

/// `is-active`, `is-failed`, `is-wanted`: one state a line (none with
/// --quiet). As systemctl: 0 when at least one name answers yes; else 3
/// (is-active, "not running") or 1 (is-failed, is-wanted); 4 when none
/// answers yes and a name is unknown.
pub(super) async fn is_state(client: &Conn, args: &Args, is: Is, names: &[String]) -> Result<u8> {
    let mut yes = false;
    let mut unknown = false;
    for name in names {
        match client.service(name).await {
            Ok(s) => {
                let (state, hit) = match is {
                    Is::Active => (
                        s.active_state.as_str(),
                        s.active_state == ActiveState::Active,
                    ),
                    Is::Failed => (
                        s.active_state.as_str(),
                        s.active_state == ActiveState::Failed,
                    ),
                    Is::Wanted => (s.desired_state.as_str(), s.desired_state == "running"),
                };
                yes |= hit;
                if !args.quiet {
                    println!("{state}");
                }
            }
            Err(Failed(code, why)) if code == exit::NO_SUCH => {
                unknown = true;
                if !args.quiet {
                    println!("unknown");
                }
                eprintln!("{name}: {why}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(match (yes, unknown, is) {
        (true, _, _) => exit::OK,
        (false, true, _) => exit::NO_SUCH,
        (false, false, Is::Active) => exit::NOT_RUNNING,
        (false, false, _) => exit::FAILURE,
    })
}
