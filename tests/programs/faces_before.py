"""A small pipeline: the expensive part, then a buggy drawing step."""

import math


def detect(frames):
    # the expensive step
    return [math.sqrt(f) for f in frames]


class Painter:
    def draw(self, boxes):
        return ["box{}" for b in boxes]


frames = list(range(10))
boxes = detect(frames)
names = Painter().draw(boxes)
print(names[:2])
