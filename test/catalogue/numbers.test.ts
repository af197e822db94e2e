/** Runs the numbers area's bad inputs (numbers.cases.ts). */
import { after, describe } from 'node:test';
import { runCatalogue } from '../helpers/catalogue';
import { cases, disposeFixtures } from './numbers.cases';

describe('numbers', () => {
  after(() => disposeFixtures());
  runCatalogue(cases);
});
