"""Student model families (installed as compressreid.students)."""
