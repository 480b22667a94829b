"""Neural fields (nn.Modules): MLPs, NeRF / Mip-NeRF / hash-grid fields."""
