#!/usr/bin/env python3
"""Why unetc uses Winograd F(2x2,3x3) and not F(4x4,3x3): the rounding error of each, in numpy float32,
on one valid 3x3 convolution (14x14 input, He-scaled kernel, 32 filters), relative to the float64
direct sum (max|y - ref| / max|ref|, the measure of tests/golden.rs). unetc's tolerance against
tf.keras is 1e-5 for a whole network: F(4x4) spends most of it in one layer.

    python3 bench/winograd_error.py
"""
import numpy as np
rng=np.random.default_rng(0)
def wino(BT,G,AT,m,x,k):
    # x: [H,W,C] float32, k: [3,3,C,F]; valid conv, output size multiple of m
    a=m+2
    H,W,C=x.shape; F=k.shape[3]
    U=np.einsum('ia,abcf,jb->ijcf',G,k,G).astype(np.float32)
    oh=H-2; ow=W-2
    out=np.zeros((oh,ow,F),np.float32)
    for ty in range(oh//m):
        for tx in range(ow//m):
            d=x[ty*m:ty*m+a, tx*m:tx*m+a]
            V=np.einsum('ir,rsc,js->ijc',BT,d,BT).astype(np.float32)
            M=np.einsum('ijc,ijcf->ijf',V,U).astype(np.float32)
            Y=np.einsum('ai,ijf,bj->abf',AT,M,AT).astype(np.float32)
            out[ty*m:ty*m+m, tx*m:tx*m+m]=Y
    return out
def direct(x,k):
    H,W,C=x.shape
    x=x.astype(np.float64); k=k.astype(np.float64)
    out=0
    for ky in range(3):
        for kx in range(3):
            out=out+np.einsum('hwc,cf->hwf',x[ky:ky+H-2,kx:kx+W-2],k[ky,kx])
    return out
BT2=np.array([[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]],np.float32)
G2=np.array([[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]],np.float32)
AT2=np.array([[1,1,1,0],[0,1,-1,-1]],np.float32)
BT4=np.array([[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]],np.float32)
G4=np.array([[1/4,0,0],[-1/6,-1/6,-1/6],[-1/6,1/6,-1/6],[1/24,1/12,1/6],[1/24,-1/12,1/6],[0,0,1]],np.float32)
AT4=np.array([[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]],np.float32)
for C in (64,512):
    x=rng.random((14,14,C)).astype(np.float32)  # relu-like positive inputs
    k=(rng.standard_normal((3,3,C,32))*np.sqrt(2/(9*C))).astype(np.float32)
    ref=direct(x,k)
    s=np.abs(ref).max()
    # f32 im2col-ish
    d32=0
    for ky in range(3):
        for kx in range(3):
            d32=d32+np.einsum('hwc,cf->hwf',x[ky:ky+12,kx:kx+12],k[ky,kx])
    print("channels", C, "direct f32",np.abs(d32-ref).max()/s,"F2",np.abs(wino(BT2,G2,AT2,2,x,k)-ref).max()/s,"F4",np.abs(wino(BT4,G4,AT4,4,x,k)-ref).max()/s)
