//! stackctl: control stackd the way systemctl controls systemd.

fn main() -> std::process::ExitCode {
    stackd::cli::main()
}
