/** Runs the files area's bad inputs (files.cases.ts): non-regular inputs, symlinks and the Hub cache, Residual's cache. */
import { after, describe } from 'node:test';
import { runCatalogue } from '../helpers/catalogue';
import { cases, disposeFixtures } from './files.cases';

describe('files', () => {
  after(() => disposeFixtures());
  runCatalogue(cases);
});
