"""The built guest images, shipped as package data (see firmware/ for their sources)."""
