"""Scene readers (transforms.json, LLFF, COLMAP), the procedural demo scene and ray samplers."""
