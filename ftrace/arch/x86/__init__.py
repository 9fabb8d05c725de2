"""x86-64 ftrace: call-site encodings, trampolines in guest code, int3 text patching."""
