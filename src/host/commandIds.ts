/** Command ids, mirroring package.json's `contributes.commands` (a unit test checks the two agree). */
export const COMMANDS = {
  analyzeSelection: 'residual.analyzeSelection',
  compareSelection: 'residual.compareSelection',
  clearHeat: 'residual.clearHeat',
  openInspector: 'residual.openInspector',
  selectModel: 'residual.selectModel',
  showActivations: 'residual.showActivations',
  openSteering: 'residual.openSteering',
  traceCircuit: 'residual.traceCircuit',
  openGraph: 'residual.openGraph',
  cancelAnalysis: 'residual.cancelAnalysis',
  showLog: 'residual.showLog',
  toggleChat: 'residual.toggleChat',
  downloadModel: 'residual.downloadModel',
  setHubToken: 'residual.setHubToken',
  clearCache: 'residual.clearCache',
} as const;
