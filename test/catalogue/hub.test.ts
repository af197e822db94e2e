/** Runs the Hub and two-writers bad-input cases (test/catalogue/hub.cases.ts). */
import { describe } from 'node:test';
import { runCatalogue } from '../helpers/catalogue';
import { cases } from './hub.cases';

describe('hub', () => runCatalogue(cases));
