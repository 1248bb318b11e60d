#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| unetc_fuzz::onnx(data));
