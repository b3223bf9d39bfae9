"""The differencing-image stack: raw and VDI images, chains, machine folders."""
