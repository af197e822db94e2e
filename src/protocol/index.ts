/**
 * Every message between the extension host and the webviews: one module per view, the shared request contract, and
 * the result types that cross. Plain types that import nothing outside this folder (a lint rule keeps it so): the
 * webviews type-check against them without seeing the engine or the host.
 */
export * from './results';
export * from './requests';
export * from './activations';
export * from './inspector';
export * from './steering';
export * from './circuit';
