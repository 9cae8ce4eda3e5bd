//! `[notify]`: channels and their secrets.

use super::*;

#[test]
fn notify_channels() {
    let text = r#"
[services.web]
[notify]
min_severity = "info"
[notify.email]
smtp = "smtps://mail.example.com"
from = "stackd@example.com"
to = ["ops@example.com", "me@example.com"]
username = "stackd"
password_file = "smtp.password"
min_severity = "critical"
services = ["web"]
[notify.webhook.ntfy]
url = "https://ntfy.sh/stackd"
format = "ntfy"
secret_file = "/etc/stackd/hook.key"
kinds = ["spike"]
[notify.desktop]
"#;
    let c = parse(text).unwrap();
    let email = c.notify.email.as_ref().unwrap();
    assert_eq!((email.smtp_port, email.implicit_tls), (465, true));
    assert_eq!(email.starttls, None);
    assert_eq!(
        email.password_file.as_deref(),
        Some(Path::new("/cfg/smtp.password"))
    );
    assert_eq!(email.filter.min_severity, Severity::Critical);
    assert_eq!(email.filter.services, vec!["web".to_owned()]);
    let hook = &c.notify.webhooks["ntfy"];
    assert_eq!(hook.format, WebhookFormat::Ntfy);
    assert_eq!(hook.filter.min_severity, Severity::Info);
    assert_eq!(hook.filter.kinds, vec!["spike".to_owned()]);
    assert_eq!(
        c.notify.desktop.as_ref().unwrap().min_severity,
        Severity::Info
    );

    let e = errors(parse(
        "[notify]\nmin_severity = \"loud\"\n[notify.email]\nfrom = \"x@y\"\nservices = [\"ghost\"]\n[notify.webhook.x]\nformat = \"xml\"\n",
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:2:16: unknown severity \"loud\": expected \"info\", \"warning\" or \"critical\"",
            "/cfg/stackd.toml:4:8: [notify.email] needs smtp, to",
            "/cfg/stackd.toml:5:13: unknown service `ghost`: expected one of (no services are defined)",
            "/cfg/stackd.toml:6:1: [notify.webhook.x] needs url",
            "/cfg/stackd.toml:7:10: unknown format \"xml\": expected \"json\", \"ntfy\", \"slack\" or \"discord\"",
        ]
    );
}

#[test]
fn inline_password_is_refused() {
    let text = "[notify.email]\nsmtp = \"smtp://mail.lan\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nusername = \"u\"\npassword = \"hunter2\"\n";
    let e = errors(parse(text));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("/cfg/stackd.toml:5:12: username needs password_file too"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("/cfg/stackd.toml:6:12: inline passwords are not allowed")
            && e[1].contains("password_file"),
        "{e:?}"
    );
    assert!(!e.concat().contains("hunter2"));

    let e = errors(parse("[notify.email]\nsmtp = \"smtp://u:pw@mail.lan\"\n"));
    assert!(
        e.iter()
            .any(|l| l.starts_with("/cfg/stackd.toml:2:8: invalid smtp URL")
                && l.contains("credentials in the URL are not allowed")),
        "{e:?}"
    );
}
