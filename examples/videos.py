"""The batch case: a loop over several videos, and in one function both the expensive call
(face detection on every frame) and a bug after it. Video 3 was filmed with the lens cap on,
the Haar cascade finds no face in it, and the mean face width divides by zero.

Run it with a checkpoint after the expensive call, inside process():

    forkpoint run videos.py --checkpoint-at videos.py:46 -- [OUT_DIR] [VIDEOS] [FRAMES]

After the fix, resume continues inside the call for video 3 without detecting its faces again;
videos 4.. run the new code, and forkpoint says that videos 1-2 ran the old one.
"""

import json
import os
import sys

import cv2
import numpy as np
from skimage import data


def make_video(index, n_frames):
    """Video ``index``: the astronaut panned and zoomed in; video 3 is dark sensor noise."""
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    if index == 3:
        image = np.random.default_rng(3).integers(0, 12, image.shape, dtype=np.uint8)
    frames = []
    for i in range(n_frames):
        zoom = 1.0 + 0.02 * index + 0.2 * i / max(n_frames - 1, 1)
        matrix = cv2.getRotationMatrix2D((256, 256), 0, zoom)
        matrix[0, 2] += 20 * np.sin(i / 5 + index)
        frames.append(cv2.warpAffine(image, matrix, (512, 512)))
    return frames


def process(index, n_frames, out_dir):
    """Detect the faces in one video (the slow part), then write a summary of them."""
    frames = make_video(index, n_frames)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = []
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        faces.append(cascade.detectMultiScale(gray, scaleFactor=1.05, minNeighbors=5))
    print(f"video {index}: searched {len(frames)} frames")

    found = [boxes for boxes in faces if len(boxes)]
    mean_width = sum(max(int(w) for x, y, w, h in boxes) for boxes in found) / len(found)
    summary = {
        "video": index,
        "frames": len(frames),
        "with_face": len(found),
        "mean_width": round(mean_width, 1),
    }
    with open(os.path.join(out_dir, f"video{index}.json"), "w") as f:
        json.dump(summary, f)
    return summary


out_dir = sys.argv[1] if len(sys.argv) > 1 else "videos-out"
n_videos = int(sys.argv[2]) if len(sys.argv) > 2 else 5
n_frames = int(sys.argv[3]) if len(sys.argv) > 3 else 12
os.makedirs(out_dir, exist_ok=True)
summaries = []
for index in range(1, n_videos + 1):
    summaries.append(process(index, n_frames, out_dir))
    print(f"video {index}: a face in {summaries[-1]['with_face']} of {n_frames} frames")
print(f"wrote {len(summaries)} summaries to {out_dir}")
