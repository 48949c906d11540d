#!/usr/bin/python3
# scripts/make_mnist10x.py OUT.h5: a data file 10x MNIST for the MPI memory benchmark (docs/SCALING.md).
# 10x MNIST: the 60000 training images and 9 shifted copies (np.roll by (dy, dx) in
# {(0,1),(0,-1),(1,0),(-1,0),(1,1),(1,-1),(-1,1),(-1,-1),(0,2)}), uint8, labels repeated.
import os
import sys

import h5py
import numpy as np
d = os.path.join(os.environ.get("TDYN_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")), "mnist", "")
X = np.frombuffer(open(d+'train-images-idx3-ubyte','rb').read()[16:], np.uint8).reshape(60000, 28, 28)
y = np.frombuffer(open(d+'train-labels-idx1-ubyte','rb').read()[8:], np.uint8).astype(np.int64)
shifts = [(0,0),(0,1),(0,-1),(1,0),(-1,0),(1,1),(1,-1),(-1,1),(-1,-1),(0,2)]
with h5py.File(sys.argv[1], 'w') as f:
    dx = f.create_dataset('/X', (600000, 784), np.uint8)
    for i, (a, b) in enumerate(shifts):
        dx[i*60000:(i+1)*60000] = np.roll(X, (a, b), axis=(1, 2)).reshape(60000, 784)
    f.create_dataset('/labels', data=np.tile(y, 10))
