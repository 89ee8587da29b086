"""Command line: `python -m synctalk_lib <command> …` runs the same code as the notebooks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import PRESETS, get_config

CHECKPOINT_HELP = ("best (default: generator_best.pt, else the newest), latest (the newest) or a "
                   "generator checkpoint file")


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value (e.g. crop.smooth_frames=9), got {pair!r}")
        out[key] = value
    return out


def _cmd_demo(args: argparse.Namespace) -> None:
    from . import demo

    paths = demo.make_demo(root=args.root, name=args.name, seconds=args.seconds,
                           seed=args.seed, overwrite=args.overwrite)
    print(paths.video)


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from . import preprocess

    overrides = _overrides(args.set)
    if args.backend:
        overrides["landmarks.backend"] = args.backend
    cfg = get_config(args.preset, overrides)
    ds = preprocess.preprocess(args.name, root=args.root, cfg=cfg, video=args.video,
                               source=args.source, force=args.force)
    print(preprocess.run_check(ds.paths, ds.config, ds.meta).to_text())
    print(f"preprocessed {ds.n_frames} frames into {ds.paths.folder}")


def _cmd_train(args: argparse.Namespace) -> None:
    from . import train

    overrides = _overrides(args.set)
    cfg = get_config(args.preset, overrides)
    result = train.train_person(
        args.name, cfg, dataset_root=args.root, checkpoints_root=args.checkpoints,
        steps=args.steps, syncnet_steps=args.syncnet_steps, ave_weights=args.ave_weights,
        resume=not args.no_resume, device=args.device, progress=not args.no_progress,
    )
    gen = result.generator
    if result.syncnet_accuracy is not None:
        print(f"syncnet held-out accuracy {result.syncnet_accuracy:.1%}: {result.syncnet_path}")
    print(f"generator step {gen.step} ({gen.perceptual} perceptual term): {gen.checkpoint}")
    if result.audio_offset is not None:
        print(result.audio_offset)


def _cmd_infer(args: argparse.Namespace) -> None:
    from . import infer

    if not args.audio and not args.text:
        raise SystemExit("give --audio FILE/FOLDER (repeatable) or --text 'words to say'")
    overrides = _overrides(args.set)
    for key, value in (("infer.mode", args.mode), ("infer.batch_size", args.batch_size),
                       ("infer.crf", args.crf), ("infer.start_frame", args.start_frame)):
        if value is not None:
            overrides[key] = value
    if args.loop_back:
        overrides["infer.loop_back"] = True
    avatar = infer.Avatar.load(
        args.name, dataset_root=args.root, checkpoints_root=args.checkpoints,
        output_root=args.outputs, checkpoint=args.checkpoint, preset=args.preset,
        overrides=overrides, backend=args.backend, device=args.device,
    )
    print(f"{args.name}: {avatar.checkpoint.name} on {avatar.backend.describe()}")
    results = []
    if args.text:
        speech = infer.speak(args.text, voice=args.voice)
        out = args.out or avatar.output_root / args.name / "text.mp4"
        results.append(avatar.render(speech, out, progress=not args.no_progress))
    for audio in args.audio:
        if Path(audio).is_dir():
            results += avatar.render_many(audio, args.out, progress=not args.no_progress)
        else:
            out = args.out if args.out and len(args.audio) == 1 and not args.text else None
            results.append(avatar.render(audio, out, progress=not args.no_progress))
    for r in results:
        print(f"{r.path}  {r.n_frames} frames in {r.seconds:.1f} s ({r.fps:.1f} fps), "
              f"{r.silent_frames} silent")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from . import evaluate, generators, person_eval

    chosen: list[Path] = []  # notebook 04: each checkpoint once, however it was named
    for item in args.checkpoint or [None]:
        path = generators.resolve_checkpoint(args.name, args.checkpoints, item)
        if path not in chosen:
            chosen.append(path)
    runs = [person_eval.evaluate_person(
        args.name, path, dataset_root=args.root, checkpoints_root=args.checkpoints,
        output_root=args.outputs, syncnet_v2_path=args.syncnet_v2,
        side_by_side=not args.no_side_by_side, backend=args.backend, device=args.device,
        progress=not args.no_progress, overrides=_overrides(args.set) or None)
        for path in chosen]
    print(person_eval.format_table(runs))
    if len(runs) > 1:
        best = evaluate.choose_best_checkpoint([r.report for r in runs])
        print(f"best (a real mouth first, then sync): {best.checkpoint} ({best.reason})")
    for run in runs:
        print(f"{run.report['checkpoint']}: report {run.report_path}")
        print(f"{run.report['checkpoint']}: mouths {run.mouth_sheet}")
        if run.side_by_side is not None:
            print(f"{run.report['checkpoint']}: real | generated {run.side_by_side}")


def _cmd_voices(args: argparse.Namespace) -> None:
    from . import infer, media, voices

    avatar = infer.Avatar.load(args.name, dataset_root=args.root,
                               checkpoints_root=args.checkpoints, output_root=args.outputs,
                               checkpoint=args.checkpoint, backend=args.backend,
                               device=args.device)
    chosen = None
    if args.audio:
        sr = avatar.cfg.media.sample_rate
        own = voices.default_voices(avatar.dataset, shared=None, espeak=False)
        chosen = own + [voices.Voice(Path(a).stem, media.load_audio(a, sr)[: round(
            args.seconds * sr)]) for a in args.audio]
    report = voices.voice_report(
        avatar, chosen, output_root=args.outputs, progress=not args.no_progress,
        **({} if chosen else {"shared": args.shared, "seconds": args.seconds,
                              "exclude": args.exclude, "espeak": not args.no_espeak}))
    print(voices.format_table(report))
    print(f"written: {Path(args.outputs) / args.name / 'eval' / voices.REPORT_FILE}")


def _cmd_serve(args: argparse.Namespace) -> None:
    import os

    from . import server

    if args.name is None and "SYNCTALK_NAME" not in os.environ:
        raise SystemExit("serve needs a person: --name <name> (or SYNCTALK_NAME=<name>)")
    given = {"name": args.name, "dataset_root": args.root, "checkpoints_root": args.checkpoints,
             "output_root": args.outputs, "checkpoint": args.checkpoint, "backend": args.backend,
             "device": args.device, "threads": args.threads, "host": args.host,
             "port": args.port, "voice": args.voice, "piper_model": args.piper_model,
             "max_text_chars": args.max_text_chars, "max_upload_mb": args.max_upload_mb,
             "max_requests": args.max_requests, "debug": args.debug or None,
             "allowed_hosts": [*server.LOOPBACK_HOSTS, *args.allowed_host]
             if args.allowed_host else None, "debug_token": args.debug_token,
             "request_timeout_s": args.request_timeout, "send_timeout_s": args.send_timeout,
             "header_timeout_s": args.header_timeout,
             "overrides": _overrides(args.set) or None}
    # flags left out fall back to SYNCTALK_* environment variables, then the defaults
    server.serve(server.ServerSettings(**{k: v for k, v in given.items() if v is not None}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m synctalk_lib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="make the embedded demo dataset (talking astronaut)")
    p.add_argument("--root", default="dataset", help="dataset folder")
    p.add_argument("--name", default="demo")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the demo video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("preprocess", help="landmarks, crops and audio features of a person")
    p.add_argument("--name", required=True, help="dataset/<name>/<name>.mp4")
    p.add_argument("--video", type=Path, help="recording to copy into dataset/<name>/ first")
    p.add_argument("--root", default="dataset", help="dataset folder")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--backend", choices=["auto", "facemesh", "mediapipe", "face_alignment"],
                   help="landmark backend (default auto: facemesh where LiteRT is installed)")
    p.add_argument("--source", default="auto", choices=["auto", "video", "frames"],
                   help="frames = SyncTalk_2D full_body_img/ folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. crop.smooth_frames=9)")
    p.add_argument("--force", action="store_true", help="recompute cached stages")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("train", help="train SyncNet and the generator of a preprocessed person "
                       "(runs under torchrun for several GPUs/processes)")
    p.add_argument("--name", required=True)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--root", default="dataset", help="dataset folder")
    p.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder")
    p.add_argument("--steps", type=int, help="generator steps in total (default: preset)")
    p.add_argument("--syncnet-steps", type=int,
                   help="(re)train SyncNet for this many steps (default: reuse it if present)")
    p.add_argument("--ave-weights", type=Path,
                   help="SyncTalk_2D audio_visual_encoder.pth, if you have it")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. train.lr=1e-4)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("infer", help="make a video of a trained person speaking new audio")
    p.add_argument("--name", required=True)
    p.add_argument("--audio", action="append", default=[], type=Path,
                   help="wav/mp3/m4a/flac… or a folder of them (repeatable: one video each)")
    p.add_argument("--text", help="say this with the offline TTS (espeak-ng) instead")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice for --text")
    p.add_argument("--out", type=Path, help="output .mp4 (one input) or folder (a folder "
                   "input); default outputs/<name>/<audio name>.mp4")
    p.add_argument("--root", default="dataset", help="dataset folder")
    p.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder")
    p.add_argument("--outputs", default="outputs", help="output folder")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="refuse a checkpoint trained with another preset")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    p.add_argument("--mode", choices=["bounce", "core"],
                   help="core = real idle footage during pauses")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crf", type=int, help="x264 quality, lower is better (default 18)")
    p.add_argument("--start-frame", type=int)
    p.add_argument("--loop-back", action="store_true", help="end on the start frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. infer.silence_db=-45)")
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser("evaluate", help="score a trained person's held-out tail, real against "
                       "generated: sync, likeness, mouth and silence (notebook 04)")
    p.add_argument("--name", required=True)
    p.add_argument("--checkpoint", action="append", metavar="CHECKPOINT",
                   help=CHECKPOINT_HELP + "; repeatable, to compare several")
    p.add_argument("--syncnet-v2", type=Path, help="syncnet_python's syncnet_v2.model for "
                   "LSE-D / LSE-C (default: $SYNCNET_V2, checkpoints/ or the torch hub folder; "
                   "skipped if absent)")
    p.add_argument("--root", default="dataset", help="dataset folder")
    p.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder")
    p.add_argument("--outputs", default="outputs", help="output folder (report in "
                   "outputs/<name>/eval/)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    p.add_argument("--no-side-by-side", action="store_true",
                   help="skip the real | generated video")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="inference setting to evaluate with, repeatable "
                   "(e.g. infer.pause_feature=digital)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("voices", help="voice report: render a trained person with other "
                       "voices and measure the mouth from landmarks on the output")
    p.add_argument("--name", required=True)
    p.add_argument("--audio", action="append", default=[], type=Path,
                   help="drive with these files instead of the default set (repeatable)")
    p.add_argument("--shared", default="auto",
                   help="folder of sample clips whose voices to use (default: ../shared/data "
                   "beside the repository, when present)")
    p.add_argument("--exclude", action="append", default=[],
                   help="leave out a sample clip by name, e.g. the person's own (repeatable)")
    p.add_argument("--seconds", type=float, default=20.0, help="cut each voice to this")
    p.add_argument("--no-espeak", action="store_true", help="leave out the espeak-ng voices")
    p.add_argument("--root", default="dataset", help="dataset folder")
    p.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder")
    p.add_argument("--outputs", default="outputs", help="output folder")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_voices)

    p = sub.add_parser("serve", help="web page and HTTP API: the person speaks typed text or "
                       "uploaded audio in the browser (FastAPI; docs at /docs)")
    p.add_argument("--name", help="trained person (default: $SYNCTALK_NAME)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--root", help="dataset folder (default dataset)")
    p.add_argument("--checkpoints", help="checkpoint folder (default checkpoints)")
    p.add_argument("--outputs", help="output folder, for debug saves (default outputs)")
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    p.add_argument("--threads", type=int, help="CPU threads for the model")
    p.add_argument("--voice", help="espeak-ng voice (default en-us)")
    p.add_argument("--piper-model", type=Path, help="a Piper voice .onnx to speak with instead")
    p.add_argument("--max-text-chars", type=int, help="longest text accepted (default 1000)")
    p.add_argument("--max-upload-mb", type=float, help="largest upload accepted (default 20)")
    p.add_argument("--max-requests", type=int,
                   help="animations at once; more get 503 (default 4)")
    p.add_argument("--debug", action="store_true",
                   help="save each request's frames and audio under outputs/<name>/debug/")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a Host name to answer besides 127.0.0.1, localhost and ::1 "
                   "(repeatable; '*' answers any)")
    p.add_argument("--debug-token", help="secret that POST /debug/config must send in "
                   "X-Debug-Token (prefer $SYNCTALK_DEBUG_TOKEN: flags show in ps)")
    p.add_argument("--request-timeout", type=float, metavar="S",
                   help="cut any request after this many seconds (default 600)")
    p.add_argument("--send-timeout", type=float, metavar="S",
                   help="cut a request whose client reads nothing for this long (default 30)")
    p.add_argument("--header-timeout", type=float, metavar="S",
                   help="close a connection that has not sent a request's headers within "
                   "this long (default 10)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. infer.mode=core)")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (RuntimeError, KeyError, TypeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
