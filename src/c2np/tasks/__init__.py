"""Task definitions (which samples, which targets) and framework views of them."""
