import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const sdk = (file: string) => fileURLToPath(new URL(`../client-sdk/src/${file}`, import.meta.url));

// The app is built from the SDK's sources, so it never waits for (or runs on) an old SDK build.
// `npm run dev -w web` proxies the API to a server started with `npm run dev` on port 3000.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  plugins: [react()],
  resolve: {
    alias: [
      { find: /^@parley\/client\/react$/, replacement: sdk('react/index.ts') },
      { find: /^@parley\/client$/, replacement: sdk('index.ts') },
    ],
  },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', reportCompressedSize: false },
  server: {
    proxy: {
      '/trpc': 'http://localhost:3000',
      '/api': 'http://localhost:3000',
      '/ws': { target: 'ws://localhost:3000', ws: true },
    },
  },
});
