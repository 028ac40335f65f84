"""A game loop that classifies what is on screen every tick without ever waiting for the model.

    python samples/game_loop.py [--model cnn] [--frames 0] [--fps 60] [--screenshot shot.png]

The scene pans and zooms across a photo. Each tick the loop draws the frame and, if the
previous inference has finished, hands the new frame to ``Pipeline.submit`` (a Future) and
moves on; the last label and the inference time are drawn on screen. The frame rate is the
game's, never the model's. Headless: ``SDL_VIDEODRIVER=dummy``. Needs pygame.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import deque
from pathlib import Path

import numpy as np

try:
    import pygame
except ImportError:  # the dev extra brings it; one sentence, not a traceback
    raise SystemExit("error: samples/game_loop.py needs pygame: pip install pygame (or the dev extra, pip install -e \".[dev]\").") from None

import edgeai

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0", help="package directory or built-in name")
    ap.add_argument("--photo", default=str(HERE / "cat.jpg"))
    ap.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: until the window closes)")
    ap.add_argument("--fps", type=int, default=60)
    ap.add_argument("--screenshot", default=None, help="save the last frame to this PNG")
    ap.add_argument("--stats", action="store_true", help="print frame/inference figures as JSON at the end")
    args = ap.parse_args()
    if args.frames < 0 or args.fps < 1:  # argparse's own one-line error (an --fps of 0 divided by zero)
        ap.error("--frames takes 0 or more frames, and --fps at least 1")
    return args


def draw_view(screen, photo, t: float):
    """The "game": pan and zoom over the photo; returns the surface drawn."""
    zoom = 1.15 + 0.15 * np.sin(t * 0.7)  # 1.0-1.3: the view never reaches past the photo's edges
    w, h = int(photo.get_width() / zoom), int(photo.get_height() / zoom)
    x = int((photo.get_width() - w) * (0.5 + 0.5 * np.sin(t * 0.5)))
    y = int((photo.get_height() - h) * (0.5 + 0.5 * np.cos(t * 0.3)))
    view = pygame.transform.smoothscale(photo.subsurface((x, y, w, h)), screen.get_size())
    screen.blit(view, (0, 0))
    return view


class Inference:
    """At most one inference in flight: collect a finished result, start a new one, never wait."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.pending = None  # the Future of the inference in flight
        self.label, self.infer_ms, self.submitted_at, self.done_at = "…", 0.0, 0.0, 0.0
        self.inferences = self.frames_while_pending = 0

    def step(self, view) -> None:
        if self.pending is not None and self.pending.done():
            top = self.pending.result()["top_k"][0]
            # the time it finished, not the frame that noticed: that one waited out clock.tick too
            # (done() turns true just before the callback runs: a frame in between reads now instead)
            finished = self.done_at if self.done_at >= self.submitted_at else time.perf_counter()
            self.label, self.infer_ms = f"{top['label']} {top['score']:.2f}", (finished - self.submitted_at) * 1e3
            self.pending = None
            self.inferences += 1
        if self.pending is None:
            frame = pygame.surfarray.array3d(view).swapaxes(0, 1)  # HxWx3 uint8 RGB
            self.submitted_at = time.perf_counter()
            self.pending = self.pipe.submit(np.ascontiguousarray(frame))
            self.pending.add_done_callback(lambda _: setattr(self, "done_at", time.perf_counter()))
        else:
            self.frames_while_pending += 1


def main() -> None:
    args = parse_args()
    pygame.display.init()  # before the model, whose first-use build takes minutes
    if pygame.display.get_driver() in ("offscreen", "dummy") and not os.environ.get("SDL_VIDEODRIVER"):
        # review: without a display SDL fell back to its offscreen driver and the loop ran forever, unseen
        raise SystemExit("error: there is no display to open the game's window on; run it on a desktop, or headless "
                         "with SDL_VIDEODRIVER=dummy (and --frames N to stop).")
    try:
        pipe = edgeai.load(args.model)  # once, at start-up
    except edgeai.EdgeAIError as e:  # a missing package, a damaged one: its sentence, not a traceback
        raise SystemExit(f"error: {e}") from None
    if pipe.is_text or pipe.package.manifest["preprocess"].get("type") != "image":
        raise SystemExit(f"error: {pipe.name} does not take images; the game loop needs an image model (--model cnn).")
    if not Path(args.photo).is_file():
        raise SystemExit(f"error: the photo {args.photo} does not exist; give --photo an image file.")
    pygame.init()
    screen = pygame.display.set_mode((640, 480))
    pygame.display.set_caption(f"edgeai · {pipe.name} · {pipe.provider}")
    try:
        photo = pygame.image.load(args.photo).convert()
    except pygame.error as e:
        raise SystemExit(f"error: {args.photo} cannot be read as an image ({e}).") from None
    font = pygame.font.Font(None, 28)
    clock = pygame.time.Clock()

    infer = Inference(pipe)
    frames = 0
    work_ms: deque[float] = deque(maxlen=10_000)  # --stats reads the last ones; a game runs for hours
    running = True
    try:
        while running:
            t0 = time.perf_counter()
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    running = False
            view = draw_view(screen, photo, frames / args.fps)
            infer.step(view)
            banner = font.render(f"{infer.label}   inference {infer.infer_ms:.0f} ms   {clock.get_fps():.0f} fps", True, (255, 255, 255))
            screen.fill((0, 0, 0), (0, 0, 640, 34))
            screen.blit(banner, (10, 8))
            pygame.display.flip()
            work_ms.append((time.perf_counter() - t0) * 1e3)
            frames += 1
            if args.frames and frames >= args.frames:
                running = False
            clock.tick(args.fps)
    except KeyboardInterrupt:  # Ctrl-C ends the loop as closing the window does (a headless run has no window; review: a traceback)
        pass

    if args.screenshot:
        pygame.image.save(screen, args.screenshot)
    pipe.close()
    pygame.quit()
    if args.stats and work_ms:
        print(json.dumps({"frames": frames, "inferences": infer.inferences, "frames_while_pending": infer.frames_while_pending,
                          "frame_work_ms_p50": float(np.median(work_ms)), "frame_work_ms_max": float(np.max(work_ms)),
                          "last_label": infer.label, "provider": pipe.provider}))


if __name__ == "__main__":
    main()
