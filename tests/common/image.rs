//! The one builder of the test image, shared by every kind of test.
//!
//! The library's unit tests (`src/engine/mod.rs`, `testing`), the
//! integration harness (`tests/common`) and the benches all include this
//! file with `#[path]`, so there is exactly one recipe. The image is a
//! static busybox (Debian's `busybox-static`) imported with `docker import`,
//! since there is no registry to pull from; its CMD is `/bin/sh`.
//!
//! The tag is derived from what goes in: the busybox binary, the applet
//! links and the files under `/etc`. An image of the same repository built
//! differently (by an older checkout, by hand, with fewer applets) has
//! another tag and is never taken for this one; an image tagged with this
//! very name by hand lacks the recipe label and is rebuilt; a new recipe
//! needs no manual tag bump. `.ci/run` removes every `stackd-test/*` image
//! first, so CI builds it as a fresh machine would.
//!
//! Only std and crates the library already has (`nix`, `sha2`, `tempfile`).

// A fixture module (also included by path): see common/mod.rs.
#![allow(unreachable_pub, clippy::unwrap_used)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

/// The repository every test image is tagged in (`.ci/run` removes it).
pub const REPOSITORY: &str = "stackd-test/busybox";

/// Applets linked into the image's /bin (all point at /bin/busybox).
const APPLETS: &[&str] = &[
    "sh", "cat", "cp", "date", "dd", "echo", "env", "false", "grep", "head", "hostname", "httpd",
    "id", "kill", "ln", "ls", "mkdir", "mv", "nc", "printf", "ps", "rm", "seq", "sleep", "tail",
    "test", "timeout", "touch", "true", "wget", "yes",
];
const ETC_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
const ETC_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
/// The label holding the recipe hash (the tag's too).
const RECIPE_LABEL: &str = "org.stackd.test.recipe";
/// Serialises builds across test processes (several test binaries and the
/// library's tests may ask at once).
const LOCK_FILE: &str = "/tmp/stackd-test-image.lock";

/// The test image's name, `stackd-test/busybox:<recipe hash>`, built first
/// unless Docker has it. Safe from any number of threads and processes: one
/// build per process at most, serialised across processes by a lock file.
///
/// Panics with what to install when the static busybox is missing, and with
/// Docker's words when the import fails: callers check for Docker first.
pub fn test_image() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let busybox = busybox_static().unwrap_or_else(|e| {
            panic!("cannot build the test image: {e} (install: apt-get install busybox-static)")
        });
        let binary = fs::read(&busybox).expect("read busybox");
        let recipe = recipe_hash(&binary);
        let name = format!("{REPOSITORY}:{recipe}");
        let _lock = lock();
        if !built_here(&name, &recipe) {
            build(&name, &recipe, &binary);
        }
        name
    })
}

/// The first 12 hex digits of SHA-256 over everything that goes into the
/// image, each part length-prefixed so no two recipes collide by shifting.
fn recipe_hash(binary: &[u8]) -> String {
    let mut sha = Sha256::new();
    let applets = APPLETS.join(" ");
    for part in [
        binary,
        applets.as_bytes(),
        ETC_PASSWD.as_bytes(),
        ETC_GROUP.as_bytes(),
    ] {
        sha.update((part.len() as u64).to_le_bytes());
        sha.update(part);
    }
    sha.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Docker has `name`, and it carries the recipe label this builder puts on
/// it: an image someone tagged with the same name by hand is rebuilt.
fn built_here(name: &str, recipe: &str) -> bool {
    let format = format!("{{{{index .Config.Labels \"{RECIPE_LABEL}\"}}}}");
    Command::new("docker")
        .args(["image", "inspect", "--format", &format, name])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == recipe
        })
}

/// An exclusive `flock` on [`LOCK_FILE`], held until dropped.
fn lock() -> Flock<fs::File> {
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {LOCK_FILE}: {e}"))
}

fn build(name: &str, recipe: &str, binary: &[u8]) {
    let stage = tempfile::Builder::new()
        .prefix("stackd-image-")
        .tempdir()
        .expect("temp dir for the image");
    let root = stage.path().join("root");
    for dir in ["bin", "etc", "tmp", "var/www"] {
        fs::create_dir_all(root.join(dir)).expect("image dir");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    let mut file = fs::File::create(root.join("bin/busybox")).expect("create busybox");
    file.write_all(binary).expect("write busybox");
    drop(file);
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).expect("applet link");
    }
    fs::write(root.join("etc/passwd"), ETC_PASSWD).expect("etc/passwd");
    fs::write(root.join("etc/group"), ETC_GROUP).expect("etc/group");

    let tarball = stage.path().join("image.tar");
    let tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let import = Command::new("docker")
        .args(["import", "--change", r#"CMD ["/bin/sh"]"#, "--change"])
        .arg(format!("LABEL {RECIPE_LABEL}={recipe}"))
        .arg(&tarball)
        .arg(name)
        .output()
        .expect("run docker import");
    assert!(
        import.status.success(),
        "docker import of {name} failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
}

/// /bin/busybox, if it is there and statically linked (Debian's `busybox`
/// package installs a dynamic one at the same path; the image has no libc).
pub fn busybox_static() -> Result<PathBuf, String> {
    let path = PathBuf::from("/bin/busybox");
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match elf_has_interpreter(&bytes) {
        Some(false) => Ok(path),
        Some(true) => Err(format!(
            "{} is dynamically linked (the `busybox` package, not `busybox-static`)",
            path.display()
        )),
        None => Err(format!("{} is not an ELF file", path.display())),
    }
}

/// Whether an ELF file asks for a program interpreter (`PT_INTERP`), i.e. is
/// dynamically linked. None when it is not a little-endian ELF file.
fn elf_has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    let int = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(bytes.iter().rev().fold(0, |n, b| (n << 8) | u64::from(*b)))
    };
    if elf.get(..4)? != b"\x7fELF" || *elf.get(5)? != 1 {
        return None;
    }
    // (e_phoff, its size), e_phentsize, e_phnum for ELF32 and ELF64.
    let (phoff, entsize, count) = match elf.get(4)? {
        1 => (int(0x1c, 4)?, int(0x2a, 2)?, int(0x2c, 2)?),
        2 => (int(0x20, 8)?, int(0x36, 2)?, int(0x38, 2)?),
        _ => return None,
    };
    let phoff = usize::try_from(phoff).ok()?;
    let entsize = usize::try_from(entsize).ok()?;
    for i in 0..usize::try_from(count).ok()? {
        if int(phoff + i * entsize, 4)? == u64::from(PT_INTERP) {
            return Some(true);
        }
    }
    Some(false)
}
