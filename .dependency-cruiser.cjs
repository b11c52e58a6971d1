/**
 * Import rules for server/src, checked by `npm run lint` (through scripts/check-cycles.mjs).
 * Type-only imports count: a folder that needs another's types depends on it all the same.
 * @type {import('dependency-cruiser').IConfiguration}
 */
module.exports = {
  forbidden: [
    {
      name: 'no-folder-cycle',
      severity: 'error',
      comment:
        'Folders form a DAG (routers → services → ports → engines); what two folders share goes ' +
        'into server/src/contracts, which every layer may import.',
      scope: 'folder',
      from: { path: '^server/src/' },
      to: { circular: true },
    },
  ],
  options: {
    includeOnly: '^server/src/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
