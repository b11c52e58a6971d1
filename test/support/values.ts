import fc from 'fast-check';

/** Any value superjson may be given: dates, maps, sets, big integers, holes, null prototypes. */
export const superjsonValues = () =>
  fc.anything({
    maxDepth: 4,
    withDate: true,
    withNullPrototype: true,
    withSparseArray: true,
    withMap: true,
    withSet: true,
    withBigInt: true,
    withBoxedValues: false,
  });
