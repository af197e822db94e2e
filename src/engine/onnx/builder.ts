/**
 * A small ONNX graph builder over the `onnx-proto` protobuf classes. Graphs are built in TypeScript straight from a
 * checkpoint; weights stay in the safetensors file and are referenced as ONNX external data (location + offset).
 */
import { onnx } from 'onnx-proto';

const { DataType } = onnx.TensorProto;
/** Element types as onnxruntime names them (its Tensor type strings). */
export type ElemType = 'float32' | 'float16' | 'bfloat16' | 'int64' | 'bool';
/**
 * The ONNX TensorProto data type of each element type (what initializers, value infos and Cast's `to` hold), the one
 * place the protobuf enum values are read.
 */
const TENSOR_TYPE: Readonly<Record<ElemType, number>> = {
  float32: DataType.FLOAT,
  float16: DataType.FLOAT16,
  bfloat16: DataType.BFLOAT16,
  int64: DataType.INT64,
  bool: DataType.BOOL,
};

export type Dim = number | string;
export type AttrValue = number | string | number[] | { float: number } | { floats: number[] } | onnx.ITensorProto;

/** Where a tensor's bytes live in an external file (relative `location`, absolute byte `offset`). */
export interface ExternalRef {
  location: string;
  offset: number;
  length: number;
}

export class GraphBuilder {
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly initializers: onnx.ITensorProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly outputNames = new Set<string>();
  private counter = 0;

  constructor(private readonly name: string) {}

  /** A fresh value name with a readable prefix. */
  fresh(prefix: string): string {
    return `${prefix}__${this.counter++}`;
  }

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: ElemType, dims: Dim[]): void {
    if (this.outputNames.has(name)) return;
    this.outputNames.add(name);
    this.outputs.push(valueInfo(name, type, dims));
  }

  constF32(prefix: string, dims: number[], data: ArrayLike<number>): string {
    const name = this.fresh(prefix);
    this.initializers.push({ name, dataType: TENSOR_TYPE.float32, dims, rawData: f32Bytes(Float32Array.from(data)) });
    return name;
  }

  constI64(prefix: string, values: number[]): string {
    const name = this.fresh(prefix);
    const buf = new BigInt64Array(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dataType: TENSOR_TYPE.int64, dims: [values.length], rawData: new Uint8Array(buf.buffer) });
    return name;
  }

  scalarI64(prefix: string, value: number): string {
    const name = this.fresh(prefix);
    const buf = new BigInt64Array([BigInt(value)]);
    this.initializers.push({ name, dataType: TENSOR_TYPE.int64, dims: [], rawData: new Uint8Array(buf.buffer) });
    return name;
  }

  /** An initializer whose bytes stay in an external file (no copy into the .onnx). */
  external(name: string, type: ElemType, dims: number[], ref: ExternalRef): string {
    this.initializers.push({
      name,
      dataType: TENSOR_TYPE[type],
      dims,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: ref.location },
        { key: 'offset', value: String(ref.offset) },
        { key: 'length', value: String(ref.length) },
      ],
    });
    return name;
  }

  /** Adds a node; returns its output names (`outputs` may name them, else fresh names are made). */
  node(opType: string, inputs: string[], opts: { outputs?: string[]; nOut?: number; attrs?: Record<string, AttrValue>; domain?: string } = {}): string[] {
    const outs = opts.outputs ?? Array.from({ length: opts.nOut ?? 1 }, () => this.fresh(opType));
    this.nodes.push({
      opType,
      input: inputs,
      output: outs,
      name: this.fresh(`n_${opType}`),
      domain: opts.domain ?? '',
      attribute: Object.entries(opts.attrs ?? {}).map(([k, v]) => attr(k, v)),
    });
    return outs;
  }

  /**
   * Gives a value produced by an earlier node a new name (a hook point) without an Identity node, which would copy
   * the tensor on every run. Only for values no node consumes yet; throws otherwise.
   */
  rename(value: string, name: string): string {
    if (this.nodes.some((n) => n.input?.includes(value))) throw new Error(`internal: ${value} is already consumed; rename it first`);
    const producer = this.nodes.find((n) => n.output?.includes(value));
    if (!producer?.output) throw new Error(`internal: no node produces ${value}`);
    producer.output = producer.output.map((o) => (o === value ? name : o));
    return name;
  }

  /** Single-output convenience. */
  op(opType: string, inputs: string[], attrs?: Record<string, AttrValue>, outName?: string): string {
    return this.node(opType, inputs, { attrs, outputs: outName ? [outName] : undefined })[0];
  }

  /** `x` converted to element type `to`. */
  cast(x: string, to: ElemType): string {
    return this.op('Cast', [x], { to: TENSOR_TYPE[to] });
  }

  encode(opset = 20): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 9,
      producerName: 'residual',
      opsetImport: [{ domain: '', version: opset }],
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }

  get nodeCount(): number {
    return this.nodes.length;
  }
}

function valueInfo(name: string, type: ElemType, dims: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: TENSOR_TYPE[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attr(name: string, v: AttrValue): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('float' in v && typeof v.float === 'number') return { name, type: T.FLOAT, f: v.float };
  if ('floats' in v && Array.isArray(v.floats)) return { name, type: T.FLOATS, floats: v.floats };
  return { name, type: T.TENSOR, t: v as onnx.ITensorProto };
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** A one-element tensor attribute value (for ConstantOfShape). */
export function tensorAttrF32(value: number): onnx.ITensorProto {
  return { dataType: TENSOR_TYPE.float32, dims: [1], rawData: f32Bytes(new Float32Array([value])) };
}
