"""A Qt desktop program that classifies the image you drop on its window or open with a button.

    python samples/desktop_app.py [IMAGE] [--model efficientnet-lite0] [--screenshot shot.png] [--quit-after-result]

The model is loaded once, at start-up. Each image goes to ``Pipeline.submit`` (a Future on
edgeai's worker thread); when it is done, a Qt signal carries the result back to the GUI thread,
so the window never freezes while the model runs. The window shows the image, the top-5 labels
as bars, the time the classification took and the execution provider. A file that is not an
image shows edgeai's one-sentence error instead. Headless: ``QT_QPA_PLATFORM=offscreen``.
Needs PySide6 (``pip install pyside6-essentials``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from concurrent.futures import Future

try:
    from PySide6.QtCore import Qt, QTimer, Signal
    from PySide6.QtGui import QImageReader, QPixmap
    from PySide6.QtWidgets import (QApplication, QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                                   QVBoxLayout, QWidget)
except ImportError:  # the dev extra brings it; one sentence, not a traceback
    raise SystemExit("error: samples/desktop_app.py needs PySide6: pip install pyside6-essentials "
                     "(or the dev extra, pip install -e \".[dev]\").") from None

import edgeai

TOP_K = 5
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff);;All files (*)"


class ClassifierWindow(QWidget):
    """Drop an image (or press "Open image…"); the labels appear when the model is done."""

    # (request number, path, Future, seconds taken), emitted on edgeai's worker thread; Qt queues
    # it to the GUI thread because this window lives there.
    finished = Signal(int, str, object, float)
    shown = Signal()  # a result or an error is on screen

    def __init__(self, pipe: edgeai.Pipeline):
        super().__init__()
        self.pipe = pipe
        self.request = 0  # only the newest image's result is shown
        self.setWindowTitle(f"edgeai · {pipe.name} · {pipe.provider}")
        self.setAcceptDrops(True)
        self.resize(720, 420)

        self.preview = QLabel("Drop an image here")
        self.preview.setAlignment(Qt.AlignCenter)
        self.preview.setFixedSize(380, 380)
        self.preview.setStyleSheet("background: #222; color: #aaa;")
        self.headline = QLabel("…")
        self.headline.setStyleSheet("font-size: 20px; font-weight: bold;")
        self.headline.setWordWrap(True)
        self.bars = []
        for _ in range(TOP_K):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            self.bars.append(bar)
        self.status = QLabel(f"running on {pipe.provider}")
        self.status.setWordWrap(True)
        self.status.setToolTip(pipe.provider_note)
        open_button = QPushButton("Open image…")
        open_button.clicked.connect(self.choose_file)

        side = QVBoxLayout()
        side.addWidget(self.headline)
        for bar in self.bars:
            side.addWidget(bar)
        side.addWidget(self.status)
        side.addStretch()
        side.addWidget(open_button)
        layout = QHBoxLayout(self)
        layout.addWidget(self.preview)
        layout.addLayout(side, 1)
        self.finished.connect(self.show_result)

    # -- input: a file dialog or a drop ---------------------------------------------------------
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", "", IMAGE_FILTER)
        if path:
            self.classify(path)

    def dragEnterEvent(self, event) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.classify(paths[0])

    # -- classification: submit, never wait ------------------------------------------------------
    def classify(self, path: str) -> None:
        self.request += 1
        request = self.request
        reader = QImageReader(path)
        reader.setAutoTransform(True)  # honour EXIF orientation, as edgeai does
        image = reader.read()
        if image.isNull():
            self.preview.setText("(no preview)")
        else:
            self.preview.setPixmap(QPixmap.fromImage(image).scaled(
                self.preview.size(), Qt.KeepAspectRatio, Qt.SmoothTransformation))
        self.headline.setText("classifying…")
        started = time.perf_counter()  # after the preview: its decode and scaling are the window's, not edgeai's
        future = self.pipe.submit(path, top_k=TOP_K)
        future.add_done_callback(
            lambda f: self.finished.emit(request, path, f, time.perf_counter() - started))

    def show_result(self, request: int, path: str, future: Future, seconds: float) -> None:
        if request != self.request:
            return  # an older image finished after a newer one was dropped
        try:
            top = future.result()["top_k"]  # done already: this does not wait
        except edgeai.EdgeAIError as e:  # a bad input: edgeai says what is wrong in one sentence
            self.show_error(str(e))
            return
        except Exception as e:  # a bug rather than a bad input; still no traceback in the window
            self.show_error(f"Unexpected {type(e).__name__}: {e}")
            return
        ms = seconds * 1e3
        self.headline.setText(f"{top[0]['label']}  {top[0]['score']:.0%}")
        self.headline.setStyleSheet("font-size: 20px; font-weight: bold;")
        for bar, entry in zip(self.bars, top + [None] * TOP_K):
            bar.setValue(round(entry["score"] * 1000) if entry else 0)
            bar.setFormat(f"{entry['label']}  {entry['score']:.1%}" if entry else "")
        self.status.setText(f"{ms:.0f} ms on {self.pipe.provider} ({self.pipe.variant})")
        print(f"result: {top[0]['label']} {top[0]['score']:.4f} {ms:.1f} ms on {self.pipe.provider}", flush=True)
        self.shown.emit()

    def show_error(self, message: str) -> None:
        self.failed = True  # --quit-after-result exits 1, as a script reading its code expects
        self.headline.setText(message)
        self.headline.setStyleSheet("font-size: 14px; font-weight: bold; color: #c0392b;")
        for bar in self.bars:
            bar.setValue(0)
            bar.setFormat("")
        self.status.setText(f"running on {self.pipe.provider}")
        print(f"error: {message}", file=sys.stderr, flush=True)
        self.shown.emit()

    def closeEvent(self, event) -> None:
        self.pipe.close()  # waits for an inference in flight, then frees the session
        super().closeEvent(event)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", help="an image to classify at start-up")
    ap.add_argument("--model", default="efficientnet-lite0", help="package directory or built-in name")
    ap.add_argument("--screenshot", default=None,
                    help="after the first result (or error), save the window to this PNG and exit")
    ap.add_argument("--quit-after-result", action="store_true", help="exit after the first result (or error)")
    args = ap.parse_args()
    if sys.platform.startswith("linux") and not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        # review: Qt aborted (exit 134, a core dump) after its own paragraph on plugins
        print("error: there is no display to open the window on; run it on a desktop, or headless with "
              "QT_QPA_PLATFORM=offscreen.", file=sys.stderr)
        return 1

    try:  # once, at start-up; a built-in model is built on first use (minutes)
        pipe = edgeai.load(args.model, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except edgeai.EdgeAIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if pipe.task != "image-classification":
        print(f"error: {pipe.name!r} is a {pipe.task} model; this program needs an image classifier.", file=sys.stderr)
        pipe.close()
        return 1

    app = QApplication(sys.argv[:1])
    window = ClassifierWindow(pipe)
    if args.screenshot or args.quit_after_result:
        def done() -> None:
            if args.screenshot:
                window.grab().save(args.screenshot)
            app.exit(1 if getattr(window, "failed", False) else 0)
        # singleShot: let Qt lay out the new texts before the grab
        window.shown.connect(lambda: QTimer.singleShot(0, done))
    window.show()
    if args.image:
        window.classify(args.image)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the terminal quits (Qt's loop never let Python's handler run)
    try:
        return app.exec()
    finally:
        pipe.close()


if __name__ == "__main__":
    sys.exit(main())
