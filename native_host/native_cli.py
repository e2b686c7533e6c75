"""`captchalens native install | uninstall | status`: the native messaging host for the browsers.

Nothing here imports TensorFlow: status checks the launcher's Python by starting it.
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "native", help="register the native messaging host with Chromium, Chrome, Edge and Brave",
        description="The browser starts the CaptchaLens host itself when the extension needs it "
                    "(no port, no token, no terminal). `install` registers it for this user with "
                    "every browser that has a profile here, or with the given --profile-dir.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    profile_help = ("a browser user-data dir (e.g. a Playwright or --user-data-dir profile) to act on "
                    "instead of the browsers' own folders (repeatable)")
    i = actions.add_parser("install", help="write the launcher and the host manifests")
    i.add_argument("--profile-dir", action="append", metavar="DIR", help=profile_help)
    i.add_argument("--model", action="append", metavar="DIR",
                   help="model folder the host serves (repeatable; default: the shipped model)")
    i.add_argument("--extension-id", metavar="ID", default=None,
                   help="the extension allowed to start the host (default: from the key in "
                        "extension/manifest.json)")
    u = actions.add_parser("uninstall", help="remove what install wrote")
    u.add_argument("--profile-dir", action="append", metavar="DIR", help=profile_help)
    s = actions.add_parser("status", help="which browsers have the host, and whether its Python works")
    s.add_argument("--profile-dir", action="append", metavar="DIR", help=profile_help)
    p.set_defaults(func=run)


def run(args) -> int:
    from . import install

    if args.action == "install":
        lines = install.install(args.profile_dir, args.model, args.extension_id)
        lines.append("Restart the browser if it is running, then turn on \"Native messaging\" in the "
                     "extension's options.")
    elif args.action == "uninstall":
        lines = install.uninstall(args.profile_dir)
    else:
        ok, lines = install.status(args.profile_dir)
        print("\n".join(lines))
        return 0 if ok else 1
    print("\n".join(lines))
    return 0
