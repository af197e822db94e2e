/** Runs the command-line catalogue (cli.cases.ts): where output goes, the memory check, the CLI contract. */
import { describe } from 'node:test';
import { runCatalogue } from '../helpers/catalogue';
import { cases } from './cli.cases';

describe('cli', () => runCatalogue(cases));
