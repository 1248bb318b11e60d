// CUDA built-ins that the layer kernels (conv.cu, layers.cu) use and emu.h does not provide,
// for the fake driver (fake_driver.cpp). Function templates, so that a non-template definition
// added to emu.h later coexists with these (overload resolution prefers the non-template).
#pragma once

template <class T> inline T min(T a, T b) { return b < a ? b : a; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }
