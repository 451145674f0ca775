"""A small pipeline: the expensive part, then a buggy drawing step."""

import math


def detect(frames):
    return [math.sqrt(f) for f in frames]  # only formatting and comments changed here


class Painter:
    def draw(self, boxes):
        return [f"box{b}" for b in boxes]


frames = list(range(10))
boxes = detect(frames)
names = Painter().draw(boxes)
print(names[:2])
