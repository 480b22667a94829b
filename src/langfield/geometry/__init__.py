"""Stateless geometry: cameras and rays, distortion, pose conventions, normalisation, camera paths."""
