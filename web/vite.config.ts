import { defineConfig } from 'vite';

// oxvirtd serves dist/ at `/` (index.html) and `/assets/*` (hashed files): docs/web-ui.md.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    // noVNC uses top-level await; every browser the UI supports has it.
    target: 'es2022',
    // Keep the CSP `default-src 'self'`: no inline scripts, and no `data:` modules.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
});
