"""A deterministic pipeline with the essay's bug in its last step (before/after: pipeline_fixed.py)."""

import sys


def detect(frame):
    return [(frame * 7) % 11, (frame * 3) % 5]


def draw(frame, boxes):
    return "frame{}.jpg".format(frame)


frames = list(range(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
print("loaded", len(frames), "frames from", __file__.rsplit("/", 1)[-1], "as", __name__)
detections = [detect(f) for f in frames]
print("detected", sum(len(d) for d in detections), "boxes")
names = [draw(f, d) for f, d in zip(frames, detections)]
if len(set(names)) != len(names):
    raise RuntimeError(f"every frame was written to {names[0]}")
print("wrote", ", ".join(names))
