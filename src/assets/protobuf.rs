//! The protobuf messages lrprune reads weights from, declared with only the fields it uses:
//! TensorFlow's `GraphDef` (frozen graphs) and ONNX's `ModelProto`, which it also writes
//! (`lrprune export --rate`, src/model/export/onnx.rs). Field numbers are those of
//! `tensorflow/core/framework/*.proto` and `onnx/onnx.proto`; every other field is skipped
//! by the decoder.

use std::collections::HashMap;

/// `tensorflow.GraphDef`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeDef>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeDef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub op: String,
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    #[prost(map = "string, message", tag = "5")]
    pub attr: HashMap<String, AttrValue>,
}

/// `tensorflow.AttrValue` (a oneof in the .proto; at most one field is set).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttrValue {
    #[prost(message, optional, tag = "1")]
    pub list: Option<AttrList>,
    #[prost(bytes = "vec", tag = "2")]
    pub s: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(float, tag = "4")]
    pub f: f32,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TfTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttrList {
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub s: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "3")]
    pub i: Vec<i64>,
}

/// `tensorflow.TensorProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfTensor {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TfShape>,
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TfShape {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TfDim>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TfDim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// TensorFlow's `DT_FLOAT`.
pub const TF_FLOAT: i32 = 1;

/// `onnx.ModelProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxModel {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<OnnxGraph>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OnnxOpset>,
}

/// `onnx.OperatorSetIdProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxOpset {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxGraph {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<OnnxNode>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<OnnxTensor>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<OnnxValueInfo>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<OnnxValueInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxNode {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<OnnxAttribute>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxAttribute {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<OnnxTensor>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// `AttributeType`: [`ONNX_ATTR_INT`], [`ONNX_ATTR_INTS`], …
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// ONNX's `AttributeProto.AttributeType` values lrprune writes.
pub const ONNX_ATTR_INT: i32 = 2;
pub const ONNX_ATTR_INTS: i32 = 7;

/// `onnx.TensorProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxTensor {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxValueInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<OnnxType>,
}

/// `onnx.TypeProto`, tensors only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxType {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<OnnxTensorType>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxTensorType {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<OnnxShape>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxShape {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<OnnxDim>,
}

/// A dimension: a size, or a name for one chosen at run time (the batch).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnnxDim {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// ONNX's `FLOAT` and `INT64` element types.
pub const ONNX_FLOAT: i32 = 1;
pub const ONNX_INT64: i32 = 7;

impl OnnxTensor {
    /// The values of a float or int64 tensor as f32, from `raw_data` or the typed field
    /// (empty for other element types).
    pub fn floats(&self) -> Vec<f32> {
        let raw = !self.raw_data.is_empty();
        match self.data_type {
            ONNX_FLOAT if raw => f32_le(&self.raw_data),
            ONNX_FLOAT => self.float_data.clone(),
            ONNX_INT64 if raw => self
                .raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            ONNX_INT64 => self.int64_data.iter().map(|&v| v as f32).collect(),
            _ => vec![],
        }
    }
}

/// Little-endian f32s from raw bytes.
pub fn f32_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
