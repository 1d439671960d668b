"""Runs a container image's entrypoint in its unpacked root filesystem, as Lambda runs a function
image, where no container runtime works (podman's crun needs cgroups this sandbox lacks):

    unshare --mount --fork --propagation private \\
        python3 scripts/rootfs_exec.py --root DIR --user 1000:1000 --workdir /tmp [--tmp-size 512m] \\
        -- /opt/deepemotion/bin/analyze

Inside the new mount namespace (unshare's, so every mount vanishes with the process): DIR becomes
read-only, /tmp a tmpfs of --tmp-size (Lambda's ephemeral storage), /proc and /dev the host's;
then chroot to DIR, change to --workdir, drop to --user (uid:gid, or a name from DIR's
/etc/passwd) with no supplementary groups, and exec the command with this process's environment
(pass the image's own with runtime_api.py --clean-env --env-file). python3 stdlib only; root.
"""
import argparse, errno, os, subprocess, sys


def mount(*args):
    subprocess.run(["mount", *args], check=True)


def resolve_user(root, spec):
    """'uid:gid', 'uid' or a user name (from the image's /etc/passwd) -> (uid, gid)."""
    name, _, group = spec.partition(":")
    if name.isdigit():
        uid, gid = int(name), None
    else:
        with open(os.path.join(root, "etc/passwd"), encoding="utf-8") as f:
            entry = next((line.split(":") for line in f if line.split(":")[0] == name), None)
        if entry is None:
            sys.exit(f"rootfs_exec: no user {name!r} in the image")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        gid = int(group) if group.isdigit() else None
        if gid is None:
            with open(os.path.join(root, "etc/group"), encoding="utf-8") as f:
                entry = next((line.split(":") for line in f if line.split(":")[0] == group), None)
            if entry is None:
                sys.exit(f"rootfs_exec: no group {group!r} in the image")
            gid = int(entry[2])
    return uid, uid if gid is None else gid


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True)
    p.add_argument("--user", default="0:0")
    p.add_argument("--workdir", default="/")
    p.add_argument("--tmp-size", default="512m")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")
    root = os.path.realpath(args.root)
    uid, gid = resolve_user(root, args.user)

    mount("--bind", root, root)
    mount("-o", "remount,bind,ro", root)
    try:  # the function must not count on writing anywhere but /tmp
        open(os.path.join(root, "etc", ".rootfs_exec_write_check"), "w").close()
        sys.exit("rootfs_exec: the root filesystem is still writable after remounting it read-only")
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
    for where in ("tmp", "proc", "dev"):
        if not os.path.isdir(os.path.join(root, where)):
            sys.exit(f"rootfs_exec: the image has no /{where} to mount on (read-only root)")
    mount("-t", "tmpfs", "-o", f"size={args.tmp_size},mode=1777,nosuid,nodev", "tmpfs", os.path.join(root, "tmp"))
    mount("--rbind", "/proc", os.path.join(root, "proc"))
    mount("--rbind", "/dev", os.path.join(root, "dev"))

    os.chroot(root)
    os.chdir(args.workdir)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.execv(command[0], command)
    except OSError as e:
        sys.exit(f"rootfs_exec: {command[0]}: {e}")


if __name__ == "__main__":
    main()
