//! Drop-ins over the main file: [`Merge`] for every raw table.

use super::*;

/// Merging a later file over an earlier one: a later leaf replaces an
/// earlier one, tables merge key by key.
pub(crate) trait Merge {
    fn merge(&mut self, later: Self);
}

impl<R: Merge> Merge for Option<R> {
    fn merge(&mut self, later: Self) {
        match (self.as_mut(), later) {
            (_, None) => {}
            (None, Some(l)) => *self = Some(l),
            (Some(e), Some(l)) => e.merge(l),
        }
    }
}

impl<R: Merge> Merge for LocMap<R> {
    fn merge(&mut self, later: Self) {
        for (name, (at, value)) in later.0 {
            match self.0.get_mut(&name) {
                // The first definition keeps its location: that is where the
                // table was introduced.
                Some((_, existing)) => existing.merge(value),
                None => {
                    self.0.insert(name, (at, value));
                }
            }
        }
    }
}

/// Implements [`Merge`] for a raw struct. The destructuring pattern is
/// exhaustive, so a field missing from the lists is a compile error.
macro_rules! merge_struct {
    ($name:ident; leaves: $($leaf:ident),* ; tables: $($table:ident),* $(,)?) => {
        impl Merge for $name {
            fn merge(&mut self, later: Self) {
                let $name { $($leaf,)* $($table,)* } = later;
                $( if $leaf.is_some() { self.$leaf = $leaf; } )*
                $( self.$table.merge($table); )*
            }
        }
    };
}

merge_struct!(RawFile;
    leaves: host, compose_dir, state_dir, compose_command, max_parallel, sample_interval,
        admin_group, boot_id_file, reload_guard;
    tables: hosts, peer, services, resources, notify, housekeeping);
merge_struct!(RawHousekeeping; leaves: prune, disk_warning; tables: );
merge_struct!(RawHost; leaves: peer; tables: );
merge_struct!(RawPeer;
    leaves: listen, token_file, tls_cert, tls_key, tls_ca, tls_pin_sha256, timeout, heartbeat;
    tables: );
merge_struct!(RawService;
    leaves: host, auto_start, depends_on, conflicts, start_order, start_timeout, handoff,
        handoff_volumes, kind, unit, exec, working_dir, environment, user, description, category, required_for;
    tables: health, restart, resources);
merge_struct!(RawHealth;
    leaves: http, expect_status, body_contains, tls_ca, tcp, command, container, file, max_age,
        interval, timeout, retries, start_period;
    tables: );
merge_struct!(RawRestart; leaves: on_failure, max_restarts, window, backoff, manual_stop, retry_interval; tables: );
merge_struct!(RawResources;
    leaves: cpu_percent, memory_percent, memory, sustain, clear_ratio, cooldown;
    tables: );
merge_struct!(RawNotify; leaves: min_severity; tables: email, webhook, desktop);
merge_struct!(RawEmail;
    leaves: smtp, starttls, from, to, username, password_file, password, min_severity,
        services, kinds;
    tables: );
merge_struct!(RawWebhook;
    leaves: url, format, secret_file, secret, min_severity, services, kinds;
    tables: );
merge_struct!(RawDesktop; leaves: min_severity, services, kinds; tables: );
