"""Writes video_sampling.json, the golden frame indices of `vision::video`'s tests, by running the
reference samplers themselves (numpy needed) on frame counts and rates instead of a decoder:

    python3 video_sampling.py > video_sampling.json

- v26: MiniCPM-V 2.6 model card, "Chat with video" (`encode_video`, MAX_NUM_FRAMES = 64);
  MiniCPM-o 2.6's card has the same function.
- v45: MiniCPM-V 4.5 model card, "Chat with Video" (`encode_video`, MAX_NUM_FRAMES = 180,
  MAX_NUM_PACKING = 3; the card calls it with choose_fps = 5). `v45_unpacked` is the same code
  with MAX_NUM_PACKING = 1 (its valid range is 1-6): what a build without the 3D resampler feeds.
- v46: transformers 5.25.0, models/minicpmv4_6/video_processing_minicpmv4_6.py,
  `MiniCPMV4_6VideoProcessor.sample_frames` (max_num_frames = 128, stack_frames = 1).

The reference fails on videos whose rate rounds to 0 (round(fps) as a range step or a frame
count: fps < 0.5) and, for 4.5, on videos shorter than 0.1 s (0 frames chosen); no case here
has either.
"""
import json
import math

import numpy as np


def uniform_sample(l, n):
    gap = len(l) / n
    idxs = [int(i * gap + gap / 2) for i in range(n)]
    return [l[i] for i in idxs]


def v26(n, fps, MAX_NUM_FRAMES=64):
    sample_fps = round(fps / 1)
    frame_idx = [i for i in range(0, n, sample_fps)]
    if len(frame_idx) > MAX_NUM_FRAMES:
        frame_idx = uniform_sample(frame_idx, MAX_NUM_FRAMES)
    return frame_idx


def v45(n, fps, choose_fps=5, MAX_NUM_FRAMES=180, MAX_NUM_PACKING=3):
    video_duration = n / fps
    if choose_fps * int(video_duration) <= MAX_NUM_FRAMES:
        packing_nums = 1
        choose_frames = round(min(choose_fps, round(fps)) * min(MAX_NUM_FRAMES, video_duration))
    else:
        packing_nums = math.ceil(video_duration * choose_fps / MAX_NUM_FRAMES)
        if packing_nums <= MAX_NUM_PACKING:
            choose_frames = round(video_duration * choose_fps)
        else:
            choose_frames = round(MAX_NUM_FRAMES * MAX_NUM_PACKING)
            packing_nums = MAX_NUM_PACKING
    frame_idx = [i for i in range(0, n)]
    frame_idx = np.array(uniform_sample(frame_idx, choose_frames))
    return [int(x) for x in frame_idx], packing_nums


def v46(n, avg_fps, max_num_frames=128):
    total_num_frames = n
    duration = n / avg_fps
    num_seconds = math.ceil(duration)
    if duration > max_num_frames:
        timestamps = [round(i * 0.1, 1) for i in range(int(duration / 0.1))]
        main_indices = [min(int(ts * avg_fps), total_num_frames - 1) for ts in timestamps]
        if len(main_indices) > max_num_frames:
            sampling_idxs = np.linspace(0, len(main_indices) - 1, max_num_frames, dtype=int)
            main_indices = [main_indices[i] for i in sampling_idxs]
    else:
        main_indices = [int(i * avg_fps) for i in range(num_seconds)]
    return [int(x) for x in main_indices]


cases = [(30, 30.0), (300, 30.0), (1800, 29.97), (1799, 30.0), (2000, 25.0), (7200, 24.0), (90000, 30.0),
         (45, 2.5), (10, 10.0), (150, 12.0), (3893, 29.97), (7, 1.0), (4, 30.0)]
out = []
for n, fps in cases:
    i45, p45 = v45(n, fps)
    out.append({"n": n, "fps": fps, "v26": v26(n, fps), "v45": i45, "v45_packing": p45,
                "v45_unpacked": v45(n, fps, MAX_NUM_PACKING=1)[0], "v46": v46(n, fps)})
print(json.dumps(out))
