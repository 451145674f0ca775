"""The batch case: the expensive call and the bug in the same function, in a loop over videos."""

import sys


def process(video):
    frames = [video * 10 + i for i in range(3)]  # the expensive part
    total = sum(frames)
    name = "video{}.mp4".format(video)
    if video == 4:
        name = name.upper()
    return f"{name}:{total}"


results = []
for video in range(1, int(sys.argv[1]) + 1):
    results.append(process(video))
    print("done", video)
print(results)
