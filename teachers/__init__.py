"""Teacher model families (installed as compressreid.teachers)."""
