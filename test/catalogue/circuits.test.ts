/** Runs the circuits area's bad inputs (circuits.cases.ts). */
import { after, describe } from 'node:test';
import { runCatalogue } from '../helpers/catalogue';
import { cases, disposeFixtures } from './circuits.cases';

describe('circuits', () => {
  after(() => disposeFixtures());
  runCatalogue(cases);
});
