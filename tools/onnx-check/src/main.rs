//! `onnx-check MODEL INPUT OUTPUT NAME [SIZE]`: runs the ONNX file MODEL in tract on the
//! float32 little-endian images in INPUT (`[n, 3, SIZE, SIZE]`, SIZE 32 unless given, n from
//! the file size) and writes the graph output NAME to OUTPUT as float32 little-endian. Used
//! by classify's export tests.

use std::process::ExitCode;

use tract_onnx::prelude::*;

fn run(model: &str, input: &str, output: &str, name: &str, size: usize) -> TractResult<()> {
    let bytes = std::fs::read(input)?;
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let n = values.len() / (3 * size * size);
    let images = tract_ndarray::Array4::from_shape_vec((n, 3, size, size), values)?;
    let mut graph = tract_onnx::onnx().model_for_path(model)?;
    let outlet = graph.find_outlet_label(name).ok_or_else(|| TractError::msg(format!("no output named {name}")))?;
    graph.select_output_outlets(&[outlet])?;
    let graph = graph
        .with_input_fact(0, f32::fact([n, 3, size, size]).into())?
        .into_optimized()?
        .into_runnable()?;
    let result = graph.run(tvec!(Tensor::from(images).into()))?;
    let out: Vec<u8> = result[0].to_plain_array_view::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(output, out)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (size, args) = match args.as_slice() {
        [rest @ .., size] if rest.len() == 4 => (size.parse().unwrap_or(0), rest),
        rest => (32, rest),
    };
    let [model, input, output, name] = args else {
        eprintln!("usage: onnx-check MODEL INPUT OUTPUT NAME [SIZE]");
        return ExitCode::from(2);
    };
    if size == 0 {
        eprintln!("onnx-check: SIZE must be a positive number of pixels");
        return ExitCode::from(2);
    }
    match run(model, input, output, name, size) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onnx-check: {e:?}");
            ExitCode::FAILURE
        }
    }
}
