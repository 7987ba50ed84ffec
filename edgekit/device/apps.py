"""The two demo apps: where they live, which artifact formats they run, where artifacts go.

The asset folder comes from the target profiles (`[demo_app] asset_folder`), written relative
to the edgekit repository (`android-demo/app/src/main/assets/models`). Its first part is the
app's folder name there; the rest is relative to the app's root, so a copy of an app anywhere
(`--app ~/src/my-android-demo`) gets the artifact in the same place inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgekit.errors import EdgekitError, UnknownChoiceError


class AppError(EdgekitError):
    """An --app that is not one of the demo apps, or an artifact that app cannot run."""

    exit_code = 2


@dataclass(frozen=True)
class DemoApp:
    name: str  # its folder name in the edgekit repository
    platform: str  # as target profiles name it in [demo_app]
    formats: tuple[str, ...]  # artifact formats its runtimes load
    runtimes: str  # for messages: what runs those formats in the app
    marker: str  # a file every copy of the app has, relative to its root
    export_hint: str


ANDROID_DEMO = DemoApp(
    name="android-demo",
    platform="android",
    formats=("executorch", "onnx", "tflite"),
    runtimes="LiteRT (.tflite), ExecuTorch (.pte), ONNX Runtime (.onnx)",
    marker="app/src/main/AndroidManifest.xml",
    export_hint="export with --target tflite, executorch or onnx",
)
IOS_DEMO = DemoApp(
    name="ios-demo",
    platform="ios",
    formats=("coreml",),
    runtimes="Core ML",
    marker="EdgekitDemo",  # the app target's source folder (XcodeGen project or Xcode project)
    export_hint="export with --target coreml",
)
DEMO_APPS = {app.name: app for app in (ANDROID_DEMO, IOS_DEMO)}


@dataclass(frozen=True)
class AppCheckout:
    app: DemoApp
    root: Path


def repository_root() -> Path:
    """The edgekit checkout this package runs from (the apps live beside the package there)."""
    return Path(__file__).resolve().parent.parent.parent


def resolve_app(spec: str) -> AppCheckout:
    """'android-demo' / 'ios-demo' (in the current folder, else in this edgekit checkout) or the
    path of a copy of either app, recognised by its marker file."""
    app = DEMO_APPS.get(spec)
    if app is not None:
        for root in (Path.cwd() / spec, repository_root() / spec):
            if (root / app.marker).exists():
                return AppCheckout(app, root)
        raise AppError(
            f"No {spec} app here: neither ./{spec} nor {repository_root() / spec} holds "
            f"{app.marker}.",
            hint=f"run from the edgekit repository, or pass the path of your copy of {spec}.",
        )
    root = Path(spec)
    if not root.is_dir():
        if "/" not in spec and not spec.startswith("."):
            raise UnknownChoiceError(
                "app", spec, list(DEMO_APPS), hint="pass a demo app's name or the path of a copy."
            )
        raise AppError(f"No app folder at '{spec}'.", hint="pass the path of a copy of a demo app.")
    for app in DEMO_APPS.values():
        if (root / app.marker).exists():
            return AppCheckout(app, root)
    markers = "; ".join(f"{app.name}: {app.marker}" for app in DEMO_APPS.values())
    raise AppError(
        f"'{spec}' is not a demo app: it holds none of the files that mark one ({markers}).",
        hint="pass the root folder of a copy of android-demo or ios-demo.",
    )


def unsupported_reason(app: DemoApp, format_name: str) -> str | None:
    """Why `app` cannot run artifacts of `format_name`, or None when it can."""
    if format_name in app.formats:
        return None
    return f"{app.name} runs {app.runtimes} artifacts only; this artifact is {format_name}."


def check_format(app: DemoApp, format_name: str) -> None:
    reason = unsupported_reason(app, format_name)
    if reason is not None:
        raise AppError(reason, hint=f"{app.export_hint}.")


def asset_folder(checkout: AppCheckout, format_name: str, profile: dict | None) -> Path:
    """Where the app looks for artifacts: the artifact's own target profile's asset folder when
    it names one for this platform, else the format's default profile's."""
    from edgekit.profiles import resolve

    demo_app = (profile or {}).get("demo_app") or {}
    if demo_app.get("platform") != checkout.app.platform:
        default = resolve(format_name).demo_app
        demo_app = default.model_dump() if default is not None else {}
    if demo_app.get("platform") != checkout.app.platform:
        raise AppError(
            f"No target profile names an asset folder of {checkout.app.name} for {format_name}.",
            hint="add a [demo_app] table with platform and asset_folder to the target profile.",
        )
    parts = PurePosixPath(demo_app["asset_folder"]).parts
    # Written relative to the repository: drop the app's folder name to get its place in the app.
    inside = parts[1:] if parts and parts[0] == checkout.app.name else parts
    return checkout.root.joinpath(*inside)
