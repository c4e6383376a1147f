// seek-bzip ships no types; its module.exports has decode() among others (decompress.ts types what it uses).
declare module 'seek-bzip' {
  const mod: unknown;
  export default mod;
}
