"""The essay's pipeline, for real: load a video, detect faces (the slow part), draw boxes and
write the frames. It has the essay's bug: every frame is written to 'frame{}.jpg'.

The video is synthetic: scikit-image's astronaut photo, panned and zoomed. Faces are found with
OpenCV's Haar cascade (opencv-python 4.x; 5.0 dropped CascadeClassifier).

    python faces.py [OUT_DIR] [FRAMES]
"""

import os
import sys

import cv2
import numpy as np
from skimage import data


def load_video(n_frames):
    """The astronaut, panned sideways and slowly zoomed in, as a list of BGR frames."""
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frames = []
    for i in range(n_frames):
        zoom = 1.0 + 0.25 * i / max(n_frames - 1, 1)
        matrix = cv2.getRotationMatrix2D((256, 256), 0, zoom)
        matrix[0, 2] += 30 * np.sin(i / 6)
        frames.append(cv2.warpAffine(image, matrix, (512, 512)))
    return frames


def detect_faces(frames):
    """Boxes (x, y, w, h) of the faces in each frame: the expensive step."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = []
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        faces.append(cascade.detectMultiScale(gray, scaleFactor=1.05, minNeighbors=5))
    return faces


def draw_boxes(frames, faces, out_dir):
    """Draw each face's box on its frame and write the frames as JPEG files."""
    os.makedirs(out_dir, exist_ok=True)
    written = set()
    for i, (frame, boxes) in enumerate(zip(frames, faces)):
        for x, y, w, h in boxes:
            cv2.rectangle(frame, (int(x), int(y)), (int(x + w), int(y + h)), (0, 255, 0), 3)
        path = os.path.join(out_dir, "frame{}.jpg")
        cv2.imwrite(path, frame)
        written.add(path)
    if len(written) != len(frames):
        raise RuntimeError(f"{len(frames)} frames went to {len(written)} file(s): {sorted(written)[0]}")
    return sorted(written)


out_dir = sys.argv[1] if len(sys.argv) > 1 else "faces-out"
n_frames = int(sys.argv[2]) if len(sys.argv) > 2 else 48
frames = load_video(n_frames)
print(f"loaded {len(frames)} frames")
faces = detect_faces(frames)
print(f"found a face in {sum(len(f) > 0 for f in faces)} of {len(frames)} frames")
paths = draw_boxes(frames, faces, out_dir)
print(
    f"wrote {len(paths)} frames to {out_dir}: {os.path.basename(paths[0])} .. {os.path.basename(paths[-1])}"
)
